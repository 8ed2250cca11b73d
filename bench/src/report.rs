//! The figures and their Markdown / JSON report.

use serde::Serialize;
use serde_json::{Map, Value};

#[derive(Debug, Serialize)]
pub struct Figure {
    pub id: &'static str,
    pub measure: String,
    pub goal: &'static str,
    /// The figure as it goes in the table.
    pub result: String,
    /// `None`: not measured (the reason is in `details`).
    pub met: Option<bool>,
    pub details: Vec<String>,
    pub values: Map<String, Value>,
}

impl Figure {
    pub fn new(id: &'static str, measure: &str, goal: &'static str) -> Figure {
        Figure {
            id,
            measure: measure.to_owned(),
            goal,
            result: String::new(),
            met: None,
            details: Vec::new(),
            values: Map::new(),
        }
    }

    pub fn not_measured(
        id: &'static str,
        measure: &str,
        goal: &'static str,
        why: String,
    ) -> Figure {
        let mut figure = Figure::new(id, measure, goal);
        figure.result = "not measured".into();
        figure.details.push(why);
        figure
    }

    pub fn detail(&mut self, line: String) {
        eprintln!("  {}: {line}", self.id);
        self.details.push(line);
    }

    pub fn value(&mut self, key: &str, value: Value) {
        self.values.insert(key.to_owned(), value);
    }
}

pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

pub struct Context {
    pub command: String,
    pub date: String,
    pub machine: String,
    pub quick: bool,
    pub elapsed_secs: f64,
}

pub fn markdown(figures: &[Figure], cx: &Context) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "# ionflow benchmark results{}\n\n- command: `{}`\n- date: {}\n- machine: {}\n- run took {:.0} s\n\n",
        if cx.quick { " (quick: small sizes, not the figures of record)" } else { "" },
        cx.command,
        cx.date,
        cx.machine,
        cx.elapsed_secs
    ));
    out.push_str("| id | measure | result | goal | met |\n|---|---|---|---|---|\n");
    for f in figures {
        let met = match f.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "not measured",
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            f.id, f.measure, f.result, f.goal, met
        ));
    }
    out.push_str("\n## Details\n\n");
    for f in figures {
        for d in &f.details {
            out.push_str(&format!("- {}: {}\n", f.id, d));
        }
    }
    out
}

pub fn json(figures: &[Figure], cx: &Context) -> Value {
    serde_json::json!({
        "command": cx.command,
        "date": cx.date,
        "machine": cx.machine,
        "quick": cx.quick,
        "elapsed_secs": cx.elapsed_secs,
        "figures": figures,
    })
}
