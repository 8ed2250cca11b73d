//! `ionflow list`: every source, transform and sink kind with one line and
//! where its documentation is. The lines come from the `source_kinds!` and
//! `sink_kinds!` registries, so a new kind is listed without touching this.

use super::Exit;
use super::output::outln;

pub fn list(json: bool) -> anyhow::Result<Exit> {
    let groups: [(&str, &[(&str, &str)]); 3] = [
        ("sources", crate::pipeline::source_kinds()),
        ("transforms", crate::pipeline::transform_kinds()),
        ("sinks", crate::pipeline::sink_kinds()),
    ];
    if json {
        let out: serde_json::Map<String, serde_json::Value> = groups
            .iter()
            .map(|(group, kinds)| {
                let list = kinds
                    .iter()
                    .map(|(kind, doc)| {
                        serde_json::json!({
                            "kind": kind,
                            "summary": doc.trim(),
                            "docs": format!("docs/PIPELINES.md#{}", section(group, kind)),
                        })
                    })
                    .collect();
                ((*group).to_owned(), serde_json::Value::Array(list))
            })
            .collect();
        outln!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(Exit::Success);
    }
    for (group, kinds) in groups {
        outln!("{group}:");
        for (kind, doc) in kinds {
            outln!(
                "  {kind:<12} {}  docs/PIPELINES.md#{}",
                doc.trim(),
                section(group, kind)
            );
        }
    }
    Ok(Exit::Success)
}

/// The anchor of a kind's section in docs/PIPELINES.md (`source-m3_list`).
pub fn section(group: &str, kind: &str) -> String {
    format!("{}-{kind}", group.trim_end_matches('s'))
}
