//! The benchmark harness in its short mode, so it cannot rot: every scenario on both
//! profiles runs against the real services with the workspace's built binaries, and the report
//! has what each scenario measures. Targets are not asserted here (a debug build on a shared
//! machine); what each scenario must have done to measure anything is (the harness fails
//! otherwise): every push queued, every stream saw every event, every role ended READY.

use std::process::Command;

use anyhow::{Context as _, Result, ensure};
use serde_json::Value;

#[test]
fn every_scenario_runs_on_both_profiles_and_reports_its_measurements() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("etter-bench-short-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let (json, markdown) = (dir.join("report.json"), dir.join("BENCHMARKS.md"));
    std::fs::write(&markdown, "# Benchmarks\n\nkept\n")?;
    let output = Command::new(env!("CARGO_BIN_EXE_etter-bench"))
        .args(["run", "--short", "--json"])
        .arg(&json)
        .arg("--markdown")
        .arg(&markdown)
        .output()?;
    ensure!(output.status.success(), "etter-bench run --short failed:\n{}", String::from_utf8_lossy(&output.stderr));
    let report: Value = serde_json::from_slice(&std::fs::read(&json)?)?;
    assert_eq!(report["mode"], "short");
    let sections = report["sections"].as_array().context("no sections")?;
    // Rows per scenario: three client levels and one push at a time; one read round; one batch;
    // one stream, then many, then many on the bare relay; ours and two baselines.
    for (scenario, rows) in [("push", 4), ("read", 1), ("batch", 1), ("fanout", 3), ("e2e", 3)] {
        for profile in ["postgres", "sqlite"] {
            let section = sections
                .iter()
                .find(|s| s["scenario"] == scenario && s["profile"] == profile)
                .with_context(|| format!("no {scenario} section for {profile}"))?;
            let table = section["rows"].as_array().context("no rows")?;
            assert_eq!(table.len(), rows, "{scenario} on {profile}: {table:?}");
            let columns = section["columns"].as_array().context("no columns")?.len();
            // The end-to-end table names what ran (first column) and adds notes in words (last);
            // every other cell is measured.
            let words: &[usize] = if scenario == "e2e" { &[0, 5] } else { &[] };
            for row in table {
                let cells = row.as_array().context("a row that is not a list")?;
                assert_eq!(cells.len(), columns, "{scenario} on {profile}: {row}");
                // A measured cell holds a finite number (ratios end in ×, pairs are `p50 / p99`; a
                // broken measurement shows as `n/a`).
                for (i, cell) in cells.iter().enumerate().filter(|(i, _)| !words.contains(i)) {
                    let text = cell.as_str().context("a cell that is not text")?;
                    assert!(
                        text.split([' ', '×', '/']).any(|part| part.parse::<f64>().is_ok_and(f64::is_finite)),
                        "{scenario} on {profile}: column {i} is not measured in {row}"
                    );
                }
            }
            assert!(!section["checks"].as_array().context("no checks")?.is_empty(), "{scenario} on {profile}");
        }
    }
    // Every role of the end-to-end scenario ended READY, on both profiles, and its headline
    // baseline is the pipeline's own workflow with no-op activities.
    for section in sections.iter().filter(|s| s["scenario"] == "e2e") {
        let check = &section["checks"][0];
        assert_eq!(check["met"], true, "e2e on {}: {check}", section["profile"]);
        let baseline = section["rows"][1][0].as_str().unwrap_or_default();
        assert!(
            baseline.starts_with("same shape"),
            "e2e on {}: the first baseline is {baseline:?}",
            section["profile"]
        );
    }
    // Temporal's own counts of its work per role were read (`scripts/services` serves them).
    for section in sections.iter().filter(|s| s["scenario"] == "e2e") {
        let notes = section["notes"].as_array().context("no notes")?;
        assert!(
            notes.iter().filter_map(|n| n.as_str()).any(|n| n.starts_with("Temporal's work, from")),
            "e2e on {}: {notes:?}",
            section["profile"]
        );
    }
    // The dev server's share of the machine is measured beside the worker's and the server's.
    for section in sections.iter().filter(|s| s["scenario"] == "e2e") {
        let notes = section["rows"][0][5].as_str().context("no notes on the e2e row")?;
        let share = notes.split_once("Temporal dev server ").and_then(|(_, rest)| rest.split_whitespace().next());
        assert!(
            share.is_some_and(|n| n.parse::<f64>().is_ok_and(f64::is_finite)),
            "e2e on {}: {notes}",
            section["profile"]
        );
    }
    let text = std::fs::read_to_string(&markdown)?;
    assert!(text.starts_with("# Benchmarks\n\nkept\n"), "the hand-written part was not kept");
    assert!(text.contains("### e2e — sqlite") && text.contains("| mode | short (debug build) |"));
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
