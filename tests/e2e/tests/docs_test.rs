//! The documentation a newcomer enters by: every relative link in README.md, CONTRIBUTING.md and
//! docs/ resolves, every `./cxgate` subcommand and repository path the README's code blocks name
//! exists, the README stays short, and docs/configuration.md has a section for each of the
//! config document's sections.

use cxgate_e2e::repo_root;
use std::path::{Path, PathBuf};

fn docs() -> Vec<PathBuf> {
    let root = repo_root();
    let mut out = vec![root.join("README.md"), root.join("CONTRIBUTING.md")];
    let mut pages: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    pages.sort();
    out.extend(pages);
    out
}

/// Targets of `[text](target)` links.
fn links(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("](") {
        let tail = &rest[at + 2..];
        let Some(end) = tail.find(')') else { break };
        out.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

#[test]
fn every_relative_link_resolves() {
    let mut broken = Vec::new();
    for doc in docs() {
        let text = std::fs::read_to_string(&doc).unwrap();
        let dir = doc.parent().unwrap_or(Path::new("."));
        for target in links(&text) {
            if target.contains("://") || target.starts_with('#') || target.starts_with("mailto:") {
                continue;
            }
            let path = target.split('#').next().unwrap_or_default();
            if !dir.join(path).exists() {
                broken.push(format!("{}: {target}", doc.display()));
            }
        }
    }
    assert!(broken.is_empty(), "broken links: {broken:#?}");
}

/// The subcommands `./cxgate` accepts (its `case` labels).
fn subcommands() -> Vec<String> {
    let script = std::fs::read_to_string(repo_root().join("cxgate")).unwrap();
    script
        .lines()
        .filter_map(|l| {
            let l = l.trim_start();
            let (label, _) = l.split_once(')')?;
            let ok = !label.is_empty()
                && label.chars().all(|c| c.is_ascii_lowercase() || c == '-')
                && l.contains(";;");
            ok.then(|| label.to_string())
        })
        .collect()
}

#[test]
fn the_readmes_commands_and_paths_exist() {
    let root = repo_root();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    assert!(
        readme.lines().count() <= 200,
        "README.md is the front door: at most 200 lines"
    );
    let subs = subcommands();
    assert!(
        subs.contains(&"demo".to_string()) && subs.contains(&"test".to_string()),
        "{subs:?}"
    );
    let mut missing = Vec::new();
    let mut in_code = false;
    for line in readme.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
            continue;
        }
        // Commands named in prose (`./cxgate render`) count too.
        for (i, _) in line.match_indices("./cxgate ") {
            let sub: String = line[i + 9..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '-')
                .collect();
            if !sub.is_empty() && !subs.contains(&sub) {
                missing.push(format!("./cxgate {sub}"));
            }
        }
        if !in_code {
            continue;
        }
        // What a shell would run: the comment after `#` is prose.
        let command = line.split(" #").next().unwrap_or_default();
        for word in command.split_whitespace() {
            let word = word.trim_matches(|c| c == '\'' || c == '"' || c == '`');
            let looks_like_path = word.contains('/')
                && !word.contains("://")
                && !word.starts_with(|c: char| c.is_ascii_digit())
                && !word.starts_with('-')
                && !word.starts_with(".run/");
            if looks_like_path && !root.join(word.trim_start_matches("./")).exists() {
                missing.push(word.to_string());
            }
        }
    }
    assert!(
        missing.is_empty(),
        "named in README.md but not there: {missing:?}"
    );
}

#[test]
fn the_configuration_page_has_every_section_of_the_document() {
    let root = repo_root();
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("schemas/filters/cxgate.config.schema.json")).unwrap(),
    )
    .unwrap();
    let page = std::fs::read_to_string(root.join("docs/configuration.md")).unwrap();
    let sections: Vec<&String> = schema["properties"].as_object().unwrap().keys().collect();
    assert!(sections.len() >= 10, "{sections:?}");
    for s in sections {
        assert!(
            page.contains(&format!("## `{s}`")),
            "docs/configuration.md has no section {s}"
        );
    }
}
