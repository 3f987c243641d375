//! The criterion micro-benchmarks' results, read from criterion's output
//! directory after `cargo bench`: per call, each beside the baseline of its group (the function
//! whose name starts with `baseline:`), measured in the same run.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context as _, Result, ensure};
use serde::Deserialize;

use crate::measure::ratio;
use crate::report::{Section, num, times};

#[derive(Deserialize)]
struct Benchmark {
    group_id: String,
    function_id: Option<String>,
}

#[derive(Deserialize)]
struct Estimates {
    median: Estimate,
}

#[derive(Deserialize)]
struct Estimate {
    point_estimate: f64,
}

/// One section of every group under `dir` (criterion's `target/criterion`).
pub fn section(dir: &Path) -> Result<Section> {
    let mut groups: BTreeMap<String, Vec<(String, f64)>> = BTreeMap::new();
    collect(dir, &mut groups)?;
    ensure!(!groups.is_empty(), "no criterion results under {}: run `cargo bench` first", dir.display());
    let mut section = Section::new("micro", "-", &["group", "function", "median per call", "÷ baseline"]);
    section.notes.push(
        "criterion (`cargo bench -p etter-core -p etter-server`), median of its samples; each group's \
         baseline runs in the same process, minutes apart at most."
            .to_owned(),
    );
    for (group, mut functions) in groups {
        functions.sort_by_key(|(name, _)| !name.starts_with("baseline"));
        let baseline = functions.iter().find(|(name, _)| name.starts_with("baseline")).map(|(_, ns)| *ns);
        for (name, ns) in &functions {
            let relative = match baseline {
                Some(base) if !name.starts_with("baseline") => times(ratio(*ns, base)),
                _ => "—".to_owned(),
            };
            section.row(vec![group.clone(), name.clone(), per_call(*ns), relative]);
        }
    }
    Ok(section)
}

fn collect(dir: &Path, groups: &mut BTreeMap<String, Vec<(String, f64)>>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if !path.is_dir() {
            continue;
        }
        let (benchmark, estimates) = (path.join("new/benchmark.json"), path.join("new/estimates.json"));
        if benchmark.exists() && estimates.exists() {
            let benchmark: Benchmark = serde_json::from_slice(&std::fs::read(&benchmark)?)
                .with_context(|| format!("{}", benchmark.display()))?;
            let estimates: Estimates = serde_json::from_slice(&std::fs::read(&estimates)?)
                .with_context(|| format!("{}", estimates.display()))?;
            groups
                .entry(benchmark.group_id)
                .or_default()
                .push((benchmark.function_id.unwrap_or_default(), estimates.median.point_estimate));
        } else {
            collect(&path, groups)?;
        }
    }
    Ok(())
}

/// Nanoseconds in the unit that suits them.
fn per_call(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{} ms", num(ns / 1e6, 2))
    } else if ns >= 1e3 {
        format!("{} µs", num(ns / 1e3, 2))
    } else {
        format!("{} ns", num(ns, 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_are_read_with_each_function_against_its_baseline() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("etter-bench-criterion-{}", std::process::id()));
        for (function, dirname, median) in [("baseline: bare", "baseline_ bare", 100.0), ("ours", "ours", 250.0)] {
            let new = dir.join("JWT verify").join(dirname).join("new");
            std::fs::create_dir_all(&new)?;
            std::fs::write(
                new.join("benchmark.json"),
                serde_json::json!({ "group_id": "JWT verify", "function_id": function }).to_string(),
            )?;
            std::fs::write(
                new.join("estimates.json"),
                serde_json::json!({ "median": { "point_estimate": median } }).to_string(),
            )?;
        }
        let section = section(&dir)?;
        assert_eq!(
            section.rows,
            vec![
                vec!["JWT verify".to_owned(), "baseline: bare".to_owned(), "100.0 ns".to_owned(), "—".to_owned()],
                vec!["JWT verify".to_owned(), "ours".to_owned(), "250.0 ns".to_owned(), "2.50×".to_owned()],
            ]
        );
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}
