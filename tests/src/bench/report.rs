//! Figures and their output: a table for people, one JSON object for tools.

use serde::Serialize;

#[derive(Clone, Debug, Serialize)]
pub struct Figure {
    pub name: String,
    pub unit: String,
    pub mesh: f64,
    pub baseline: Option<f64>,
    pub ratio: Option<f64>,
    pub higher_is_better: bool,
}

impl Figure {
    pub fn new(
        name: &str,
        unit: &str,
        mesh: f64,
        baseline: Option<f64>,
        higher_is_better: bool,
    ) -> Self {
        let ratio = baseline.filter(|b| *b != 0.0).map(|b| round(mesh / b, 4));
        Self {
            name: name.to_owned(),
            unit: unit.to_owned(),
            mesh: round(mesh, 3),
            baseline: baseline.map(|b| round(b, 3)),
            ratio,
            higher_is_better,
        }
    }
}

fn round(value: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (value * scale).round() / scale
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub scenario: String,
    pub figures: Vec<Figure>,
}

impl Report {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    pub fn to_table(&self) -> String {
        // At least 24 wide, wider for long (suffixed) names so columns align.
        let width = self
            .figures
            .iter()
            .map(|f| f.name.chars().count())
            .max()
            .unwrap_or(0)
            .max(24);
        let mut out = format!(
            "scenario: {}\n{:<width$} {:>12} {:>12} {:>8}  unit\n",
            self.scenario, "figure", "mesh", "baseline", "ratio"
        );
        for f in &self.figures {
            let baseline = f.baseline.map_or("-".to_string(), |b| format!("{b:.2}"));
            let ratio = f.ratio.map_or("-".to_string(), |r| format!("{r:.3}"));
            out.push_str(&format!(
                "{:<width$} {:>12.2} {:>12} {:>8}  {}\n",
                f.name, f.mesh, baseline, ratio, f.unit
            ));
        }
        out
    }
}
