//! The item master behind both the M3 (`MMS200MI`) and the Mongoose
//! (`SLItems`) APIs. Generated data is a pure function of the item count, so
//! tests and developers can rely on exact values across runs; items added
//! through `AddItmBasic` join the same ordered map.
//!
//! Public shape followed: the M3 item master (`MITMAS`) as `MMS200MI` shows
//! it (`ITNO`, `ITDS`, ..., `RGDT`/`LMDT` dates, three-decimal weights) and
//! SyteLine's `SLItems` view of the same rows (GUID `RowPointer`s).

use std::collections::BTreeMap;
use std::ops::Bound;

use chrono::{DateTime, Days, NaiveDate, SubsecRound as _, TimeDelta, TimeZone as _, Utc};
use serde::ser::{Serialize, SerializeMap, Serializer};
use sha2::{Digest, Sha256};

/// The only company the simulated M3 has.
pub(crate) const COMPANY: &str = "100";

/// Item types the simulated M3 knows (`ITTY`).
pub(crate) const ITEM_TYPES: &[&str] = &["FIN", "RAW", "SPR", "PKG", "SRV"];
/// Units of measure the simulated M3 knows (`UNMS`).
pub(crate) const UNITS: &[&str] = &["EA", "PCS", "KG", "M", "L", "BOX"];
/// Item statuses (`STAT`): preliminary, definite, phase-out, expired, blocked.
pub(crate) const STATUSES: &[&str] = &["10", "20", "50", "80", "90"];

const ADJECTIVES: &[&str] = &[
    "Heavy",
    "Light",
    "Compact",
    "Sealed",
    "Coated",
    "Forged",
    "Precision",
    "Flexible",
    "Reinforced",
    "Insulated",
    "Threaded",
    "Polished",
    "Welded",
    "Hardened",
    "Slim",
    "Modular",
];
const NOUNS: &[&str] = &[
    "Bracket", "Flange", "Gasket", "Valve", "Bearing", "Bushing", "Coupling", "Hinge", "Pulley",
    "Sprocket", "Washer", "Spacer", "Clamp", "Shaft", "Housing", "Nozzle", "Fitting", "Manifold",
    "Lever", "Spring", "Panel", "Cable", "Sensor", "Filter",
];
const MATERIALS: &[&str] = &[
    "Steel", "Alu", "Brass", "Copper", "Nylon", "PVC", "Rubber", "Titanium", "Zinc", "Oak",
];
const APPLICATIONS: &[&str] = &[
    "pump assemblies",
    "conveyor lines",
    "HVAC units",
    "hydraulic presses",
    "packaging machines",
    "marine engines",
    "farm equipment",
    "cold storage",
    "robot cells",
    "test rigs",
];
const RESPONSIBLES: &[&str] = &[
    "JSMITH",
    "MGARCIA",
    "AKOWALSKI",
    "LNGUYEN",
    "PMULLER",
    "SOKAFOR",
];

/// Generated change timestamps fall in 2026-01-01 .. 2026-10-31 so that items
/// added at run time are always newer, as incremental loads expect.
const CHANGE_WINDOW_DAYS: i64 = 304;

fn change_window_start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
}

/// The time a change made now is stamped with, in whole milliseconds: the
/// resolution Mongoose's `RecordDate` shows, so that an incremental load
/// asking for `RecordDate > 'the newest value it saw'` cannot get the same
/// item again.
pub(crate) fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(3)
}

/// The smallest step between two change times (see [`now`]).
const TICK: TimeDelta = TimeDelta::milliseconds(1);

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Item {
    pub(crate) itno: String,
    pub(crate) itds: String,
    pub(crate) fuds: String,
    pub(crate) itty: String,
    pub(crate) itgr: String,
    pub(crate) itcl: String,
    pub(crate) unms: String,
    pub(crate) stat: String,
    pub(crate) resp: String,
    /// Weights in thousandths of a kilogram, M3's three decimals.
    pub(crate) grwe_milli: u64,
    pub(crate) newe_milli: u64,
    /// Entry date (M3 `RGDT`, Mongoose `CreateDate`).
    pub(crate) created: NaiveDate,
    /// Last change, in whole milliseconds (M3 `LMDT`, Mongoose `RecordDate`).
    pub(crate) changed: DateTime<Utc>,
}

impl Item {
    /// Mongoose's RowPointer: a GUID, stable for an item number.
    pub(crate) fn row_pointer(&self) -> String {
        let digest = Sha256::digest(format!("rowpointer:{}", self.itno).as_bytes());
        let h = super::codec::hex(&digest[..16]).to_uppercase();
        format!(
            "{}-{}-{}-{}-{}",
            &h[..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        )
    }
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Catalogue {
    items: BTreeMap<String, Item>,
    /// The newest `changed` so far.
    latest_change: DateTime<Utc>,
}

impl Catalogue {
    pub(crate) fn generate(count: usize) -> Catalogue {
        let width = count.to_string().len().max(6);
        let items: BTreeMap<String, Item> = (1..=count)
            .map(|n| generated_item(n, width))
            .map(|item| (item.itno.clone(), item))
            .collect();
        let latest_change = items.values().map(|i| i.changed).max().unwrap_or_default();
        Catalogue {
            items,
            latest_change,
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    pub(crate) fn get(&self, itno: &str) -> Option<&Item> {
        self.items.get(itno)
    }

    /// Items in key order from `start`, inclusive: M3's key positioning.
    pub(crate) fn starting_at<'a>(&'a self, start: &'a str) -> impl Iterator<Item = &'a Item> + 'a {
        self.items
            .range::<str, _>((Bound::Included(start), Bound::Unbounded))
            .map(|(_, item)| item)
    }

    /// Items in key order after `key`, exclusive: a Mongoose bookmark.
    pub(crate) fn after<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a Item> + 'a {
        self.items
            .range::<str, _>((Bound::Excluded(key), Bound::Unbounded))
            .map(|(_, item)| item)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Item> {
        self.items.values()
    }

    /// Adds an item unless its number is taken; returns whether it was added.
    ///
    /// Changes an existing item and marks it changed now (or later than
    /// every earlier change, like [`Self::insert`]). `false` when it does not exist.
    pub(crate) fn update(&mut self, itno: &str, change: impl FnOnce(&mut Item)) -> bool {
        let latest = self.latest_change;
        let Some(item) = self.items.get_mut(itno) else {
            return false;
        };
        change(item);
        item.changed = now().max(latest + TICK);
        self.latest_change = item.changed;
        true
    }

    /// The item's change time is pushed past every earlier one, so that an
    /// incremental load (`RecordDate > last seen`) finds it even when the
    /// host clock is behind the generated 2026 dates.
    pub(crate) fn insert(&mut self, mut item: Item) -> bool {
        if self.items.contains_key(&item.itno) {
            return false;
        }
        item.changed = item.changed.max(self.latest_change + TICK);
        self.latest_change = item.changed;
        self.items.insert(item.itno.clone(), item);
        true
    }
}

/// The zero-padded number keeps lexical order equal to numeric order, which
/// is what key-based paging relies on.
pub(crate) fn item_number(n: usize, width: usize) -> String {
    format!("ITM{n:0width$}")
}

fn generated_item(n: usize, width: usize) -> Item {
    let r = mix(n as u64);
    let s = mix(r ^ 0x5EED_CAFE);
    let pick = |list: &[&'static str], bits: u64| list[(bits % list.len() as u64) as usize];

    let adjective = pick(ADJECTIVES, r);
    let noun = pick(NOUNS, r >> 8);
    let material = pick(MATERIALS, r >> 16);
    let application = pick(APPLICATIONS, r >> 24);
    let size = 10 * (1 + (r >> 32) % 150);
    // Some items have no long description, so `excludeempty` has something to do.
    let fuds = if (r >> 40).is_multiple_of(9) {
        String::new()
    } else {
        format!(
            "{material} {} for {application}, {size} mm",
            noun.to_lowercase()
        )
    };
    let stat = match (s >> 8) % 100 {
        0..80 => "20",
        80..88 => "10",
        88..94 => "50",
        94..97 => "80",
        _ => "90",
    };
    let grwe_milli = 50 + (s >> 16) % 250_000;
    let newe_milli = grwe_milli * (80 + (s >> 40) % 21) / 100;
    let window_secs = CHANGE_WINDOW_DAYS as u64 * 86_400;
    let changed = change_window_start() + TimeDelta::seconds(((s >> 4) % window_secs) as i64);
    let created = changed.date_naive() - Days::new((r >> 48) % 1000);

    Item {
        itno: item_number(n, width),
        itds: format!("{adjective} {noun} {material}"),
        fuds,
        itty: pick(ITEM_TYPES, s >> 24).to_owned(),
        itgr: format!("G{}", 100 + (s >> 32) % 40),
        itcl: format!("C{:02}", (s >> 48) % 25),
        unms: pick(UNITS, s >> 56).to_owned(),
        stat: stat.to_owned(),
        resp: pick(RESPONSIBLES, r >> 56).to_owned(),
        grwe_milli,
        newe_milli,
        created,
        changed,
    }
}

/// SplitMix64: a cheap, well-mixed deterministic hash of the item number.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `1.25`, `3`, `0.05`: how the M3 REST layer shows decimals.
pub(crate) fn format_milli(value: u64) -> String {
    let (whole, frac) = (value / 1000, value % 1000);
    if frac == 0 {
        whole.to_string()
    } else {
        format!("{whole}.{frac:03}")
            .trim_end_matches('0')
            .to_owned()
    }
}

/// A non-negative decimal with at most nine integer and three fraction digits.
pub(crate) fn parse_milli(text: &str) -> Option<u64> {
    let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || whole.len() > 9 || frac.len() > 3 || !digits(whole) || !digits(frac) {
        return None;
    }
    if text.ends_with('.') {
        return None;
    }
    let frac_value: u64 = format!("{frac:0<3}").parse().ok()?;
    Some(whole.parse::<u64>().ok()? * 1000 + frac_value)
}

/// A flat record whose fields keep the order the API defines (a
/// `serde_json::Map` would sort them alphabetically).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Record(pub(crate) Vec<(&'static str, String)>);

impl Record {
    #[cfg(test)]
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

impl Serialize for Record {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, value) in &self.0 {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_is_deterministic_and_ordered() {
        let a = Catalogue::generate(2500);
        let b = Catalogue::generate(2500);
        assert_eq!(a.len(), 2500);
        assert!(a.iter().eq(b.iter()));
        let keys: Vec<&str> = a.iter().map(|i| i.itno.as_str()).collect();
        assert_eq!(keys[0], "ITM000001");
        assert_eq!(keys[2499], "ITM002500");
        let numeric: Vec<usize> = keys.iter().map(|k| k[3..].parse().unwrap()).collect();
        assert_eq!(numeric, (1..=2500).collect::<Vec<_>>());
        // A smaller catalogue is a prefix of a bigger one.
        let small = Catalogue::generate(10);
        assert!(small.iter().eq(a.iter().take(10)));
    }

    #[test]
    fn wide_catalogues_keep_lexical_order() {
        assert_eq!(item_number(7, 7), "ITM0000007");
        let keys: Vec<String> = (1..=20).map(|n| item_number(n, 7)).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
    }

    #[test]
    fn generated_values_fit_m3_field_lengths() {
        let cat = Catalogue::generate(3000);
        let first = change_window_start();
        let last = first + TimeDelta::days(CHANGE_WINDOW_DAYS);
        let mut empty_fuds = 0;
        for item in cat.iter() {
            assert!(item.itds.len() <= 30, "{}", item.itds);
            assert!(item.fuds.len() <= 60, "{}", item.fuds);
            assert!(item.itgr.len() <= 5 && item.itcl.len() <= 5);
            assert!(ITEM_TYPES.contains(&item.itty.as_str()));
            assert!(UNITS.contains(&item.unms.as_str()));
            assert!(STATUSES.contains(&item.stat.as_str()));
            assert!(item.newe_milli <= item.grwe_milli);
            assert!((first..last).contains(&item.changed));
            assert!(item.created <= item.changed.date_naive());
            empty_fuds += usize::from(item.fuds.is_empty());
        }
        assert!(empty_fuds > 100 && empty_fuds < 1000, "{empty_fuds}");
    }

    #[test]
    fn key_ranges() {
        let cat = Catalogue::generate(5);
        let from: Vec<_> = cat.starting_at("ITM000003").map(|i| &i.itno[..]).collect();
        assert_eq!(from, ["ITM000003", "ITM000004", "ITM000005"]);
        let after: Vec<_> = cat.after("ITM000003").map(|i| &i.itno[..]).collect();
        assert_eq!(after, ["ITM000004", "ITM000005"]);
        assert_eq!(cat.starting_at("").count(), 5);
        assert_eq!(
            cat.starting_at("ITM0000025").next().unwrap().itno,
            "ITM000003"
        );
        assert_eq!(cat.starting_at("ZZZ").count(), 0);
    }

    #[test]
    fn insert_refuses_duplicates() {
        let mut cat = Catalogue::generate(3);
        let mut item = cat.get("ITM000002").unwrap().clone();
        assert!(!cat.insert(item.clone()));
        item.itno = "A1".into();
        item.changed = DateTime::UNIX_EPOCH;
        let newest = cat.iter().map(|i| i.changed).max().unwrap();
        assert!(cat.insert(item));
        let added = cat.iter().next().unwrap();
        assert_eq!(added.itno, "A1");
        assert_eq!(added.changed, newest + TimeDelta::milliseconds(1));
    }

    #[test]
    fn decimals() {
        assert_eq!(format_milli(1250), "1.25");
        assert_eq!(format_milli(3000), "3");
        assert_eq!(format_milli(50), "0.05");
        assert_eq!(parse_milli("1.25"), Some(1250));
        assert_eq!(parse_milli("3"), Some(3000));
        assert_eq!(parse_milli("0.005"), Some(5));
        for bad in ["", ".5", "1.", "1.2345", "-1", "1e3", "1,5", "1234567890"] {
            assert_eq!(parse_milli(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn row_pointer_is_a_stable_guid() {
        let cat = Catalogue::generate(1);
        let rp = cat.get("ITM000001").unwrap().row_pointer();
        assert_eq!(rp.len(), 36);
        assert_eq!(rp, cat.get("ITM000001").unwrap().row_pointer());
    }
}
