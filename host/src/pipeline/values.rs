//! Records as jaq values and back: from `serde_json::Value`, straight from
//! JSON text, to `Value`, and straight to JSON text.
//!
//! Every path means the same as going through `serde_json::Value`: JSON
//! text is read by serde_json into jaq's value (jaq's own `Deserialize`,
//! which is what [`to_val`] mirrors), and a jq output is written by
//! serde_json, leaf by leaf, exactly as its `Value` would be. Anything that
//! is not plain JSON (byte strings, big or decimal numbers, NaN, non-string
//! keys) goes through jaq's JSON text, which decides what it means or
//! refuses it.

use jaq_json::{Map, Num, Val};
use serde::ser::{Error as _, SerializeMap, SerializeSeq};
use serde_json::Value;

use super::transform::MAX_DEPTH;
use crate::sandbox::{self, Limit, alloc::Budget};

/// A record as jaq's value, built directly: what `Val::deserialize` makes
/// of it, without going through serde's visitor.
pub fn to_val(value: &Value) -> Val {
    match value {
        Value::Null => Val::Null,
        Value::Bool(b) => Val::Bool(*b),
        Value::Number(n) => Val::Num(if let Some(u) = n.as_u64() {
            Num::from_integral(u)
        } else if let Some(i) = n.as_i64() {
            Num::from_integral(i)
        } else {
            Num::Float(n.as_f64().unwrap_or(f64::NAN))
        }),
        Value::String(s) => Val::utf8_str(s.clone().into_bytes()),
        Value::Array(items) => items.iter().map(to_val).collect(),
        Value::Object(fields) => Val::obj(
            fields
                .iter()
                .map(|(k, v)| (Val::utf8_str(k.clone().into_bytes()), to_val(v)))
                .collect::<Map>(),
        ),
    }
}

/// One JSON document as jaq's value, as `to_val(serde_json::from_str(text))`
/// would make it, without the `Value` in between.
pub fn parse(text: &str) -> serde_json::Result<Val> {
    serde_json::from_str(text)
}

/// A jq output as a record.
pub fn to_json(val: &Val) -> Result<Value, String> {
    match plain_json(val, 0) {
        Some(value) => Ok(value),
        None => {
            if too_deep(val, 0) {
                return Err(format!(
                    "jq produced a value nested deeper than {MAX_DEPTH} levels"
                ));
            }
            serde_json::from_str(&val.to_string())
                .map_err(|e| format!("jq produced a value that is not JSON ({e}): {val}"))
        }
    }
}

/// A jq output appended to `out` as one line of JSON text, byte for byte
/// what `serde_json::to_writer(to_json(val)?)` writes.
pub fn write_json(val: &Val, out: &mut Vec<u8>) -> Result<(), String> {
    let start = out.len();
    if serde_json::to_writer(&mut *out, &Plain { val, depth: 0 }).is_err() {
        out.truncate(start);
        serde_json::to_writer(&mut *out, &to_json(val)?)
            .map_err(|e| format!("could not write a jq output as JSON: {e}"))?;
    }
    out.push(b'\n');
    Ok(())
}

/// A jq output as the next filter's input: what it would be after a trip
/// through `Value`, without the trip when it changes nothing.
pub fn normalize(val: Val) -> Result<Val, String> {
    if round_trips(&val, 0) {
        Ok(val)
    } else {
        Ok(to_val(&to_json(&val)?))
    }
}

/// Containers are where values grow: past its budget, the evaluation
/// stops here rather than in the allocator (see `sandbox::alloc`).
#[inline]
fn check_budget() {
    if Budget::exceeded() {
        sandbox::raise(Limit::Memory);
    }
}

/// `None` for a value that is not plain JSON or too deep.
fn plain_json(val: &Val, depth: usize) -> Option<Value> {
    Some(match val {
        Val::Null => Value::Null,
        Val::Bool(b) => Value::Bool(*b),
        Val::Num(Num::Int(i)) => Value::from(*i as i64),
        Val::Num(Num::Float(f)) => Value::Number(serde_json::Number::from_f64(*f)?),
        // `tonumber` keeps the literal: JSON reads it as the text path would.
        Val::Num(Num::Dec(text)) => Value::Number(text.parse().ok()?),
        Val::Num(_) | Val::BStr(_) => return None,
        Val::TStr(bytes) => Value::String(std::str::from_utf8(bytes).ok()?.to_owned()),
        Val::Arr(_) | Val::Obj(_) if depth >= MAX_DEPTH => return None,
        Val::Arr(items) => {
            check_budget();
            Value::Array(
                items
                    .iter()
                    .map(|v| plain_json(v, depth + 1))
                    .collect::<Option<_>>()?,
            )
        }
        Val::Obj(fields) => {
            check_budget();
            Value::Object(
                fields
                    .iter()
                    .map(|(k, v)| match k {
                        Val::TStr(key) => Some((
                            std::str::from_utf8(key).ok()?.to_owned(),
                            plain_json(v, depth + 1)?,
                        )),
                        _ => None,
                    })
                    .collect::<Option<_>>()?,
            )
        }
    })
}

fn too_deep(val: &Val, depth: usize) -> bool {
    match val {
        Val::Arr(_) | Val::Obj(_) if depth >= MAX_DEPTH => true,
        Val::Arr(items) => items.iter().any(|v| too_deep(v, depth + 1)),
        Val::Obj(fields) => fields
            .iter()
            .any(|(k, v)| too_deep(k, depth + 1) || too_deep(v, depth + 1)),
        _ => false,
    }
}

/// Whether `normalize` would give back the same value.
fn round_trips(val: &Val, depth: usize) -> bool {
    match val {
        Val::Null | Val::Bool(_) | Val::Num(Num::Int(_)) => true,
        Val::Num(Num::Float(f)) => f.is_finite(),
        Val::Num(_) | Val::BStr(_) => false,
        Val::TStr(bytes) => std::str::from_utf8(bytes).is_ok(),
        Val::Arr(_) | Val::Obj(_) if depth >= MAX_DEPTH => false,
        Val::Arr(items) => items.iter().all(|v| round_trips(v, depth + 1)),
        Val::Obj(fields) => fields.iter().all(|(k, v)| {
            matches!(k, Val::TStr(_)) && round_trips(k, 0) && round_trips(v, depth + 1)
        }),
    }
}

/// Serializes plain JSON as its `Value` would be; fails (to be retried
/// through `to_json`) on anything else.
struct Plain<'a> {
    val: &'a Val,
    depth: usize,
}

impl serde::Serialize for Plain<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let not_plain = || S::Error::custom("not plain JSON");
        let child = |val| Plain {
            val,
            depth: self.depth + 1,
        };
        match self.val {
            Val::Null => s.serialize_unit(),
            Val::Bool(b) => s.serialize_bool(*b),
            Val::Num(Num::Int(i)) => s.serialize_i64(*i as i64),
            Val::Num(Num::Float(f)) => serde_json::Number::from_f64(*f)
                .ok_or_else(not_plain)?
                .serialize(s),
            Val::Num(Num::Dec(text)) => text
                .parse::<serde_json::Number>()
                .map_err(|_| not_plain())?
                .serialize(s),
            Val::Num(_) | Val::BStr(_) => Err(not_plain()),
            Val::TStr(bytes) => {
                s.serialize_str(std::str::from_utf8(bytes).map_err(|_| not_plain())?)
            }
            Val::Arr(_) | Val::Obj(_) if self.depth >= MAX_DEPTH => Err(not_plain()),
            Val::Arr(items) => {
                check_budget();
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items.iter() {
                    seq.serialize_element(&child(item))?;
                }
                seq.end()
            }
            Val::Obj(fields) => {
                check_budget();
                let mut map = s.serialize_map(Some(fields.len()))?;
                for (k, v) in fields.iter() {
                    let Val::TStr(key) = k else {
                        return Err(not_plain());
                    };
                    map.serialize_entry(
                        std::str::from_utf8(key).map_err(|_| not_plain())?,
                        &child(v),
                    )?;
                }
                map.end()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_path_agrees_with_serde_json() {
        let record = json!({
            "s": "tekst \u{e9}\"\\\u{1}\n", "i": -7, "u": 18446744073709551615u64, "f": 2.5,
            "e": 1e300, "n": null, "b": true, "a": [1, "x", [], {}], "o": {"k": {"z": 0}}
        });
        let text = serde_json::to_string(&record).unwrap();
        let val = parse(&text).unwrap();
        assert_eq!(val, to_val(&record));
        assert_eq!(to_json(&val).unwrap(), record);
        let mut out = Vec::new();
        write_json(&val, &mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), format!("{text}\n"));
        // The slow path, text through jaq's printer, agrees with the fast one.
        let through_text: Value = serde_json::from_str(&val.to_string()).unwrap();
        assert_eq!(to_json(&val).unwrap(), through_text);
        assert_eq!(normalize(val.clone()).unwrap(), val);
    }

    #[test]
    fn values_that_are_not_plain_json_take_the_slow_path() {
        // `"1.50" | tonumber` keeps the literal; JSON reads it as 1.5.
        let dec = Val::Num(Num::Dec(jaq_json::Rc::new("1.50".to_string())));
        let mut out = Vec::new();
        write_json(&dec, &mut out).unwrap();
        assert_eq!(out, b"1.5\n");
        assert_eq!(normalize(dec).unwrap(), Val::Num(Num::Float(1.5)));
        let nan = Val::Num(Num::Float(f64::NAN));
        assert!(
            write_json(&nan, &mut Vec::new())
                .unwrap_err()
                .contains("not JSON")
        );
        // Walking ten thousand levels needs more than a test thread's stack.
        std::thread::Builder::new()
            .stack_size(256 << 20)
            .spawn(|| {
                let mut deep = Val::Null;
                for _ in 0..MAX_DEPTH + 1 {
                    deep = [deep].into_iter().collect();
                }
                assert!(to_json(&deep).unwrap_err().contains("deeper"));
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
