//! `metrics.jsonl` (one JSON object per log or eval event) and the loss-curve
//! picture `loss_curve.svg`, redrawn after each event (atomically, so a viewer
//! never sees half a file).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use plotters::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub step: u64,
    pub epoch: f64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub loss: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub lr: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub grad_norm: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub tokens_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub eval_loss: Option<f64>,
}

pub struct Metrics {
    path: PathBuf,
    svg: PathBuf,
    records: Vec<Record>,
}

impl Metrics {
    /// Open `dir/metrics.jsonl`. On resume (`keep_until = Some(step)`) records
    /// after the checkpoint are dropped, since those steps will be redone.
    pub fn open(dir: &Path, keep_until: Option<u64>) -> Result<Self> {
        let path = dir.join("metrics.jsonl");
        let mut records = vec![];
        if let Some(step) = keep_until {
            if let Ok(text) = std::fs::read_to_string(&path) {
                for line in text.lines().filter(|l| !l.trim().is_empty()) {
                    // A torn last line (killed mid-write) is simply dropped.
                    if let Ok(r) = serde_json::from_str::<Record>(line) {
                        if r.step <= step {
                            records.push(r);
                        }
                    }
                }
            }
        }
        let m = Metrics {
            svg: dir.join("loss_curve.svg"),
            path,
            records,
        };
        m.rewrite()?;
        Ok(m)
    }

    fn rewrite(&self) -> Result<()> {
        let mut text = String::new();
        for r in &self.records {
            text.push_str(&serde_json::to_string(r)?);
            text.push('\n');
        }
        sqlora_atomic::write(&self.path, text)?;
        Ok(())
    }

    pub fn records(&self) -> &[Record] {
        &self.records
    }

    pub fn push(&mut self, r: Record) -> Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&self.path)
            .with_context(|| format!("{}: cannot open", self.path.display()))?;
        // One write call per line: appends from two runs never interleave
        // within a line (`writeln!` may split it into several writes).
        f.write_all(format!("{}\n", serde_json::to_string(&r)?).as_bytes())
            .with_context(|| format!("{}: cannot append", self.path.display()))?;
        self.records.push(r);
        self.draw()
    }

    /// Training loss and eval loss against the optimizer step.
    pub fn draw(&self) -> Result<()> {
        let train: Vec<(f64, f64)> = self
            .records
            .iter()
            .filter_map(|r| Some((r.step as f64, r.loss?)))
            .collect();
        let eval: Vec<(f64, f64)> = self
            .records
            .iter()
            .filter_map(|r| Some((r.step as f64, r.eval_loss?)))
            .collect();
        if train.is_empty() && eval.is_empty() {
            return Ok(());
        }
        let all = train.iter().chain(&eval);
        let x_max = all.clone().map(|p| p.0).fold(1.0, f64::max);
        let y_max = all.clone().map(|p| p.1).fold(f64::MIN, f64::max).max(1e-3) * 1.05;
        let y_min = all.map(|p| p.1).fold(f64::MAX, f64::min).min(y_max).max(0.0) * 0.95;
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (800, 480)).into_drawing_area();
            root.fill(&WHITE).map_err(plot_err)?;
            let mut chart = ChartBuilder::on(&root)
                .caption("sqlora train: loss", ("sans-serif", 22))
                .margin(12)
                .x_label_area_size(36)
                .y_label_area_size(52)
                .build_cartesian_2d(0f64..x_max, y_min..y_max)
                .map_err(plot_err)?;
            chart
                .configure_mesh()
                .x_desc("optimizer step")
                .y_desc("loss")
                .draw()
                .map_err(plot_err)?;
            chart
                .draw_series(LineSeries::new(train, &BLUE))
                .map_err(plot_err)?
                .label("train")
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLUE));
            chart
                .draw_series(LineSeries::new(eval.clone(), RED.stroke_width(2)))
                .map_err(plot_err)?
                .label("eval")
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], RED));
            chart
                .draw_series(eval.iter().map(|&p| Circle::new(p, 3, RED.filled())))
                .map_err(plot_err)?;
            chart
                .configure_series_labels()
                .border_style(BLACK)
                .background_style(WHITE)
                .draw()
                .map_err(plot_err)?;
            root.present().map_err(plot_err)?;
        }
        sqlora_atomic::write(&self.svg, svg)?;
        Ok(())
    }
}

fn plot_err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("loss curve: {e}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_append_truncate_on_resume_and_draw() {
        let dir = std::env::temp_dir().join(format!("sqlora-metrics-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut m = Metrics::open(&dir, None).unwrap();
        for step in 1..=6 {
            let eval_loss = (step % 3 == 0).then_some(2.0 / step as f64);
            m.push(Record {
                step,
                epoch: 0.1 * step as f64,
                loss: Some(3.0 - 0.3 * step as f64),
                lr: Some(1e-4),
                grad_norm: Some(1.0),
                tokens_per_s: Some(100.0),
                eval_loss,
            })
            .unwrap();
        }
        let svg = std::fs::read_to_string(dir.join("loss_curve.svg")).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("optimizer step"));
        let m2 = Metrics::open(&dir, Some(4)).unwrap();
        assert_eq!(m2.records().len(), 4);
        let text = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
        assert_eq!(text.lines().count(), 4);
        assert!(text.lines().nth(2).unwrap().contains("\"eval_loss\""));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
