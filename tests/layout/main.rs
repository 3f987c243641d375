//! Checks that keep the repository's shape and its reference documents from drifting: the crates
//! depend on each other only as `docs/ARCHITECTURE.md` allows, and `docs/configuration.md` is the
//! key reference rendered from the sections' own documentation, and no crate's modules depend on
//! each other in a cycle. No service is needed.
//!
//! `ETTER_BLESS=1 cargo test -p etter-tests --test layout` rewrites `docs/configuration.md`'s key
//! table after a key changed, and `docs/operations.md`'s metrics table after a metric changed.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail, ensure};

mod modules;

/// Each crate's workspace dependencies, by crate name.
type Edges = BTreeMap<String, BTreeSet<String>>;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap_or(Path::new("/")).to_path_buf()
}

/// The allowed edges: `crate: dep, dep` for what it is built with, `crate (tests): dep` for what
/// its tests, benches and examples may use besides, read from the fenced block after the
/// `allowed dependencies` marker of docs/ARCHITECTURE.md.
fn allowed() -> Result<(Edges, Edges)> {
    let doc = std::fs::read_to_string(root().join("docs/ARCHITECTURE.md"))?;
    let start =
        doc.find("<!-- allowed dependencies").context("docs/ARCHITECTURE.md has no allowed-dependencies block")?;
    let block = doc[start..].split("```").nth(1).context("the allowed-dependencies block is not fenced")?;
    let (mut build, mut tests) = (BTreeMap::new(), BTreeMap::new());
    for line in block.lines().skip(1).map(str::trim).filter(|l| !l.is_empty()) {
        let (name, deps) = line.split_once(':').with_context(|| format!("not `crate: deps`: {line}"))?;
        let deps: BTreeSet<String> =
            deps.split(',').map(str::trim).filter(|d| !d.is_empty() && *d != "-").map(str::to_owned).collect();
        match name.trim().strip_suffix("(tests)") {
            Some(name) => tests.insert(name.trim().to_owned(), deps),
            None => build.insert(name.trim().to_owned(), deps),
        };
    }
    Ok((build, tests))
}

/// Each workspace package's dependencies on other workspace packages: (normal and build, dev).
fn actual() -> Result<(Edges, Edges)> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline"])
        .current_dir(root())
        .output()?;
    ensure!(out.status.success(), "cargo metadata failed: {}", String::from_utf8_lossy(&out.stderr));
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let packages = meta["packages"].as_array().context("no packages")?;
    let names: BTreeSet<&str> = packages.iter().filter_map(|p| p["name"].as_str()).collect();
    let (mut build_edges, mut dev_edges) = (Edges::new(), Edges::new());
    for package in packages {
        let name = package["name"].as_str().context("a package without a name")?;
        let (mut build, mut dev) = (BTreeSet::new(), BTreeSet::new());
        for dep in package["dependencies"].as_array().into_iter().flatten() {
            let Some(dep_name) = dep["name"].as_str().filter(|d| names.contains(d)) else { continue };
            if dep["kind"].as_str() == Some("dev") {
                dev.insert(dep_name.to_owned());
            } else {
                build.insert(dep_name.to_owned());
            }
        }
        build_edges.insert(name.to_owned(), build);
        dev_edges.insert(name.to_owned(), dev);
    }
    Ok((build_edges, dev_edges))
}

/// The root file (`src/lib.rs`) of every library in the workspace, by package name.
fn libraries() -> Result<BTreeMap<String, PathBuf>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline"])
        .current_dir(root())
        .output()?;
    ensure!(out.status.success(), "cargo metadata failed: {}", String::from_utf8_lossy(&out.stderr));
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let mut libraries = BTreeMap::new();
    for package in meta["packages"].as_array().context("no packages")? {
        for target in package["targets"].as_array().into_iter().flatten() {
            let is_lib = target["kind"].as_array().is_some_and(|k| k.iter().any(|k| k == "lib"));
            if let (true, Some(name), Some(path)) = (is_lib, package["name"].as_str(), target["src_path"].as_str()) {
                libraries.insert(name.to_owned(), PathBuf::from(path));
            }
        }
    }
    Ok(libraries)
}

#[test]
fn no_crate_has_a_module_cycle() -> Result<()> {
    let libraries = libraries()?;
    ensure!(libraries.contains_key("etter-server") && libraries.len() >= 8, "too few libraries found: {libraries:?}");
    let mut problems = Vec::new();
    for (name, lib_rs) in &libraries {
        let edges = modules::edges(lib_rs)?;
        for cycle in modules::cycles(&edges) {
            let mut shown = format!("{name}: modules {} depend on each other:", cycle.join(", "));
            for from in &cycle {
                for (to, file) in edges[from].iter().filter(|(to, _)| cycle.contains(to)) {
                    let file = file.strip_prefix(root()).unwrap_or(file).display();
                    shown.push_str(&format!("\n    {from} → {to} (e.g. {file})"));
                }
            }
            problems.push(shown);
        }
    }
    ensure!(problems.is_empty(), "module cycles:\n{}", problems.join("\n"));
    Ok(())
}

/// The check itself finds a cycle, the way it would find one in a crate: two modules of a
/// scratch crate that use each other, through a `use` item and through a path in an expression.
#[test]
fn the_module_check_finds_a_cycle_through_uses_and_paths() -> Result<()> {
    let dir = tempfile::Builder::new().prefix("etter-layout-").tempdir()?;
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("b"))?;
    std::fs::write(src.join("lib.rs"), "mod a;\nmod b;\nmod c;\n")?;
    std::fs::write(src.join("a.rs"), "use crate::{b::{self, Thing}, c};\npub fn f() {}\n")?;
    std::fs::write(src.join("b/mod.rs"), "mod inner;\npub struct Thing;\n")?;
    std::fs::write(src.join("b/inner.rs"), "pub fn g() { crate::a::f() }\n")?;
    std::fs::write(src.join("c.rs"), "#[cfg(test)]\nmod tests { use crate::a; }\n")?;
    let edges = modules::edges(&src.join("lib.rs"))?;
    ensure!(edges["c"].is_empty(), "test-only uses are not edges: {edges:?}");
    ensure!(modules::cycles(&edges) == vec![vec!["a".to_owned(), "b".to_owned()]], "{edges:?}");
    Ok(())
}

#[test]
fn crates_depend_on_each_other_only_as_the_architecture_allows() -> Result<()> {
    let (allowed_build, allowed_tests) = allowed()?;
    let mut problems = Vec::new();
    let (build_edges, dev_edges) = actual()?;
    for (name, build) in build_edges {
        let dev = dev_edges.get(&name).cloned().unwrap_or_default();
        let Some(may) = allowed_build.get(&name) else {
            problems.push(format!("{name} is not in docs/ARCHITECTURE.md's allowed dependencies"));
            continue;
        };
        for dep in build.difference(may) {
            problems.push(format!("{name} depends on {dep}, which docs/ARCHITECTURE.md does not allow"));
        }
        let may_test: BTreeSet<&String> = may.iter().chain(allowed_tests.get(&name).into_iter().flatten()).collect();
        for dep in dev.iter().filter(|d| !may_test.contains(d)) {
            problems.push(format!("{name}'s tests depend on {dep}, which docs/ARCHITECTURE.md does not allow"));
        }
    }
    // The allowed graph itself points one way: no crate reaches itself, tests included.
    let edges = |name: &str| -> BTreeSet<String> {
        allowed_build.get(name).into_iter().chain(allowed_tests.get(name)).flatten().cloned().collect()
    };
    for start in allowed_build.keys() {
        let mut seen = BTreeSet::new();
        let mut next: Vec<String> = edges(start).into_iter().collect();
        while let Some(crate_name) = next.pop() {
            if crate_name == *start {
                problems.push(format!("{start} reaches itself through the allowed dependencies"));
                break;
            }
            if seen.insert(crate_name.clone()) {
                next.extend(edges(&crate_name));
            }
        }
    }
    if !problems.is_empty() {
        bail!("{}", problems.join("\n"));
    }
    Ok(())
}

fn leaf_keys(value: &serde_json::Value, prefix: &str, out: &mut BTreeSet<String>) {
    match value.as_object() {
        Some(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                leaf_keys(v, &key, out);
            }
        }
        None => {
            out.insert(prefix.to_owned());
        }
    }
}

#[test]
fn every_key_a_binary_reads_is_documented_and_nothing_else() -> Result<()> {
    for (binary, defaults, documented) in [
        (
            "etter-server",
            serde_json::to_value(etter_server::config::Config::default())?,
            etter_server::config::Config::documented_keys(),
        ),
        (
            "etter-worker",
            serde_json::to_value(etter_worker::config::Config::default())?,
            etter_worker::config::Config::documented_keys(),
        ),
    ] {
        let blank: Vec<&str> =
            documented.iter().filter(|k| k.description.trim().is_empty()).map(|k| k.key.as_str()).collect();
        ensure!(blank.is_empty(), "{binary}'s settings without a doc comment: {blank:?}");
        let documented: BTreeSet<String> = documented.into_iter().map(|k| k.key).collect();
        let mut leaves = BTreeSet::new();
        leaf_keys(&defaults, "", &mut leaves);
        let undocumented: Vec<_> = leaves.difference(&documented).collect();
        let unread: Vec<_> = documented.difference(&leaves).collect();
        ensure!(undocumented.is_empty(), "{binary} reads keys nobody documented: {undocumented:?}");
        ensure!(unread.is_empty(), "{binary} documents keys it does not read: {unread:?}");
        for key in &leaves {
            let section = key.split('.').next().unwrap_or_default();
            ensure!(
                etter_config::SECTIONS.contains(&section),
                "{binary}'s section {section} is not in etter_config::SECTIONS"
            );
        }
    }
    Ok(())
}

/// The key table: every key either binary reads, once, in key order.
fn key_table() -> Result<String> {
    let mut defaults = serde_json::to_value(etter_worker::config::Config::default())?;
    let server = serde_json::to_value(etter_server::config::Config::default())?;
    if let (Some(into), Some(from)) = (defaults.as_object_mut(), server.as_object()) {
        for (k, v) in from {
            into.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    let binaries = [
        ("server", etter_server::config::Config::documented_keys()),
        ("worker", etter_worker::config::Config::documented_keys()),
    ];
    Ok(etter_config::render_key_table(&binaries, &defaults))
}

#[test]
fn the_configuration_reference_is_current() -> Result<()> {
    let path = root().join("docs/configuration.md");
    let doc = std::fs::read_to_string(&path)?;
    let table = key_table()?;
    let start = doc.find("| key | environment variable |").context("docs/configuration.md has no key table")?;
    let end = doc[start..].find("\n\n").map_or(doc.len(), |n| start + n + 1);
    if std::env::var_os("ETTER_BLESS").is_some() {
        std::fs::write(&path, format!("{}{table}{}", &doc[..start], &doc[end..]))?;
        return Ok(());
    }
    ensure!(
        doc[start..end] == table,
        "docs/configuration.md's key table is stale: regenerate it with `ETTER_BLESS=1 cargo test -p etter-tests --test layout`"
    );
    Ok(())
}

#[test]
fn the_metrics_table_is_current() -> Result<()> {
    let path = root().join("docs/operations.md");
    let doc = std::fs::read_to_string(&path)?;
    let table = etter_telemetry::metrics::render_table();
    let start = doc.find("| metric | kind |").context("docs/operations.md has no metrics table")?;
    let end = doc[start..].find("\n\n").map_or(doc.len(), |n| start + n + 1);
    if std::env::var_os("ETTER_BLESS").is_some() {
        std::fs::write(&path, format!("{}{table}{}", &doc[..start], &doc[end..]))?;
        return Ok(());
    }
    ensure!(
        doc[start..end] == table,
        "docs/operations.md's metrics table is stale: regenerate it with `ETTER_BLESS=1 cargo test -p etter-tests --test layout`"
    );
    Ok(())
}

/// The release version, from `[workspace.package]` in Cargo.toml: the one place it is kept.
fn workspace_version() -> Result<String> {
    let manifest: toml::Value = toml::from_str(&std::fs::read_to_string(root().join("Cargo.toml"))?)?;
    manifest["workspace"]["package"]["version"].as_str().map(str::to_owned).context("workspace.package.version")
}

#[test]
fn every_package_carries_the_workspace_version_and_the_changelog_has_it() -> Result<()> {
    let version = workspace_version()?;
    let mut copies = Vec::new();
    for path in ["clients/web/package.json", "clients/web/package-lock.json"] {
        let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(root().join(path))?)?;
        copies.push((path.to_owned(), doc["version"].as_str().unwrap_or_default().to_owned()));
        if let Some(root_package) = doc.get("packages").and_then(|p| p.get("")) {
            copies.push((
                format!("{path} (packages[\"\"])"),
                root_package["version"].as_str().unwrap_or_default().into(),
            ));
        }
    }
    let python = "clients/python/src/etter_client/__init__.py";
    let text = std::fs::read_to_string(root().join(python))?;
    let line = text.lines().find(|l| l.starts_with("__version__ = ")).context("__version__")?;
    copies.push((python.to_owned(), line.trim_start_matches("__version__ = ").trim_matches('"').to_owned()));
    let chart = "deploy/helm/etter-pipeline/Chart.yaml";
    let text = std::fs::read_to_string(root().join(chart))?;
    for key in ["version", "appVersion"] {
        let line =
            text.lines().find(|l| l.starts_with(&format!("{key}: "))).with_context(|| format!("{chart}: {key}"))?;
        copies.push((format!("{chart} ({key})"), line[key.len() + 2..].trim_matches('"').to_owned()));
    }
    let stale: Vec<_> = copies.iter().filter(|(_, v)| *v != version).collect();
    ensure!(stale.is_empty(), "Cargo.toml says {version}, but {stale:?}: run `scripts/set-version {version}`");
    let changelog = std::fs::read_to_string(root().join("CHANGELOG.md"))?;
    ensure!(
        changelog.lines().any(|l| l.starts_with(&format!("## [{version}]"))),
        "CHANGELOG.md has no `## [{version}]` section"
    );
    Ok(())
}
