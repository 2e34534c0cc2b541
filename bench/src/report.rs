//! The result table: one row per (measurement, baseline or goal), printed as markdown.

/// One line of the table.
#[derive(Debug, Clone)]
pub struct Row {
    pub stage: String,
    pub result: String,
    pub baseline: String,
    pub ratio: Option<f64>,
    pub goal: String,
    pub met: Option<bool>,
}

impl Row {
    /// A measurement against a baseline rate (higher is better). `min_ratio` is the goal, if any.
    pub fn versus(
        stage: impl Into<String>,
        result: impl Into<String>,
        value: f64,
        baseline: impl Into<String>,
        baseline_value: Option<f64>,
        min_ratio: Option<f64>,
    ) -> Row {
        let ratio = baseline_value.filter(|b| *b > 0.0).map(|b| value / b);
        Row {
            stage: stage.into(),
            result: result.into(),
            baseline: baseline.into(),
            ratio,
            goal: min_ratio.map_or_else(|| "—".to_string(), |g| format!("≥ {g}×")),
            met: match (ratio, min_ratio) {
                (Some(r), Some(g)) => Some(r >= g),
                _ => None,
            },
        }
    }

    /// A reference figure measured for comparison, with no baseline or goal of its own.
    pub fn reference(stage: impl Into<String>, result: impl Into<String>) -> Row {
        Row {
            stage: stage.into(),
            result: result.into(),
            baseline: "—".into(),
            ratio: None,
            goal: "—".into(),
            met: None,
        }
    }

    /// A figure against the same figure measured in other conditions: `slowdown` is how many
    /// times worse it is here (higher is worse), met when at most `max`.
    pub fn slowdown(
        stage: impl Into<String>,
        result: impl Into<String>,
        baseline: impl Into<String>,
        slowdown: f64,
        max: f64,
    ) -> Row {
        Row {
            stage: stage.into(),
            result: result.into(),
            baseline: baseline.into(),
            ratio: Some(slowdown),
            goal: format!("≤ {max}× slower"),
            met: Some(slowdown <= max),
        }
    }

    /// A measurement against an absolute goal.
    pub fn absolute(stage: impl Into<String>, result: impl Into<String>, goal: impl Into<String>, met: bool) -> Row {
        Row {
            stage: stage.into(),
            result: result.into(),
            baseline: "—".into(),
            ratio: None,
            goal: goal.into(),
            met: Some(met),
        }
    }
}

/// The markdown table.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::from("| stage | result | baseline | ratio | goal | met? |\n|---|---|---|---|---|---|\n");
    for r in rows {
        let ratio = r.ratio.map_or_else(|| "—".to_string(), |x| format!("{x:.2}×"));
        let met = match r.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "—",
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            r.stage, r.result, r.baseline, ratio, r.goal, met
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_and_goals_render() {
        let rows = vec![
            Row::versus("a", "80 /s", 80.0, "pgbench: 100 tps", Some(100.0), Some(0.8)),
            Row::versus("b", "10 /s", 10.0, "skipped", None, Some(2.0)),
            Row::absolute("c", "6.00 ms", "< 5 ms", false),
        ];
        let t = table(&rows);
        assert!(
            t.contains("| a | 80 /s | pgbench: 100 tps | 0.80× | ≥ 0.8× | yes |"),
            "{t}"
        );
        assert!(t.contains("| b | 10 /s | skipped | — | ≥ 2× | — |"), "{t}");
        assert!(t.contains("| c | 6.00 ms | — | — | < 5 ms | **no** |"), "{t}");
    }
}
