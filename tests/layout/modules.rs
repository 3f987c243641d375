//! No module cycles: within each library crate of the workspace, the top-level modules depend on
//! each other in one direction only. A module's dependencies are the top-level modules it names
//! through `crate::…` (or `super::…` from a top-level module), in `use` items and in paths alike;
//! test-only code (`#[cfg(test)]`) is left out.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};
use syn::visit::Visit;

/// For each top-level module: the modules it uses, each with one file that shows the use.
pub type ModuleEdges = BTreeMap<String, BTreeMap<String, PathBuf>>;

/// The top-level module a file under `src` belongs to, and whether the file is the module's own
/// file (where `super` is the crate root). `None` for the crate root itself.
fn module_of(src: &Path, file: &Path) -> Option<(String, bool)> {
    let rel = file.strip_prefix(src).ok()?;
    let parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let first = parts.first()?;
    if parts.len() == 1 {
        let name = first.strip_suffix(".rs")?;
        return (!matches!(name, "lib" | "main")).then(|| (name.to_owned(), true));
    }
    let own = parts.len() == 2 && parts[1] == "mod.rs";
    Some((first.clone(), own))
}

struct Uses<'a> {
    own_file: bool,
    found: &'a mut BTreeSet<String>,
}

impl Uses<'_> {
    fn is_test_only(attrs: &[syn::Attribute]) -> bool {
        attrs.iter().any(|a| {
            a.path().is_ident("cfg") && a.meta.require_list().is_ok_and(|l| l.tokens.to_string().trim() == "test")
        })
    }

    fn root_relative(&self, first: &syn::Ident) -> bool {
        first == "crate" || (self.own_file && first == "super")
    }

    fn use_tree(&mut self, tree: &syn::UseTree, at_root: bool) {
        match tree {
            syn::UseTree::Path(p) if !at_root && self.root_relative(&p.ident) => self.use_tree(&p.tree, true),
            syn::UseTree::Path(p) if at_root => {
                self.found.insert(p.ident.to_string());
            }
            syn::UseTree::Name(n) if at_root => {
                self.found.insert(n.ident.to_string());
            }
            syn::UseTree::Rename(r) if at_root => {
                self.found.insert(r.ident.to_string());
            }
            syn::UseTree::Group(g) => g.items.iter().for_each(|t| self.use_tree(t, at_root)),
            _ => {}
        }
    }
}

impl<'ast> Visit<'ast> for Uses<'_> {
    fn visit_item(&mut self, item: &'ast syn::Item) {
        let attrs = match item {
            syn::Item::Mod(m) => &m.attrs,
            syn::Item::Fn(f) => &f.attrs,
            syn::Item::Impl(i) => &i.attrs,
            syn::Item::Use(u) => &u.attrs,
            _ => return syn::visit::visit_item(self, item),
        };
        if !Self::is_test_only(attrs) {
            syn::visit::visit_item(self, item);
        }
    }

    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        self.use_tree(&item.tree, false);
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        let mut segments = path.segments.iter();
        if let (Some(first), Some(second)) = (segments.next(), segments.next())
            && self.root_relative(&first.ident)
        {
            self.found.insert(second.ident.to_string());
        }
        syn::visit::visit_path(self, path);
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            rust_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    Ok(())
}

/// The top-level module graph of the library whose root file is `lib_rs`.
pub fn edges(lib_rs: &Path) -> Result<ModuleEdges> {
    let src = lib_rs.parent().context("a library root without a folder")?;
    let mut files = Vec::new();
    rust_files(src, &mut files)?;
    let mut edges = ModuleEdges::new();
    for file in files {
        // Binaries under src/bin are crate roots of their own.
        if file.strip_prefix(src).is_ok_and(|r| r.starts_with("bin")) {
            continue;
        }
        let Some((module, own_file)) = module_of(src, &file) else { continue };
        let text = std::fs::read_to_string(&file)?;
        let ast = syn::parse_file(&text).with_context(|| format!("parsing {}", file.display()))?;
        let mut found = BTreeSet::new();
        Uses { own_file, found: &mut found }.visit_file(&ast);
        let entry = edges.entry(module.clone()).or_default();
        for dep in found.into_iter().filter(|d| *d != module) {
            entry.entry(dep).or_insert_with(|| file.clone());
        }
    }
    // Names that are not top-level modules (items of the crate root) are not edges.
    let modules: BTreeSet<String> = edges.keys().cloned().collect();
    for deps in edges.values_mut() {
        deps.retain(|d, _| modules.contains(d));
    }
    Ok(edges)
}

/// The strongly connected components of more than one module (Tarjan).
pub fn cycles(edges: &ModuleEdges) -> Vec<Vec<String>> {
    struct State<'a> {
        edges: &'a ModuleEdges,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        found: Vec<Vec<String>>,
    }
    fn connect<'a>(s: &mut State<'a>, v: &'a str) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.edges.get(v).into_iter().flat_map(|d| d.keys()) {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                connect(s, w);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.found.push(component);
            }
        }
    }
    let mut state = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in edges.keys() {
        if !state.index.contains_key(v.as_str()) {
            connect(&mut state, v);
        }
    }
    state.found
}
