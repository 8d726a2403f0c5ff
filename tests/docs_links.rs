//! Every relative link in `README.md` and `docs/` leads somewhere: the file
//! or folder exists, and an `#anchor` names a heading of the page it points
//! to, as GitHub derives heading anchors.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

#[test]
fn every_relative_link_and_anchor_resolves() {
    let mut pages = vec![PathBuf::from(ROOT).join("README.md")];
    for entry in fs::read_dir(Path::new(ROOT).join("docs")).expect("docs/") {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|extension| extension == "md") {
            pages.push(path);
        }
    }
    let mut broken = Vec::new();
    let mut checked = 0;
    for page in &pages {
        let text = fs::read_to_string(page).unwrap();
        for target in link_targets(&text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            checked += 1;
            let (path, anchor) = target.split_once('#').unwrap_or((&target, ""));
            let linked = match path {
                "" => page.clone(),
                path => page.parent().unwrap().join(path),
            };
            let name = format!("{}: ({target})", page.strip_prefix(ROOT).unwrap().display());
            if !linked.exists() {
                broken.push(format!("{name}: no such file"));
            } else if !anchor.is_empty() {
                let headings = anchors(&fs::read_to_string(&linked).unwrap());
                if !headings.contains(anchor) {
                    broken.push(format!("{name}: no heading with that anchor"));
                }
            }
        }
    }
    assert!(checked > 50, "only {checked} relative links found");
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn anchors_are_derived_as_github_does() {
    let page = "# Metric names: no `_total`\n## A, b & c\n## A, b & c\n```\n# not a heading\n```\n";
    let expected = ["metric-names-no-_total", "a-b--c", "a-b--c-1"];
    assert_eq!(anchors(page), HashSet::from(expected.map(String::from)));
}

/// The targets of the inline links (`[text](target)`) of a Markdown page,
/// outside code blocks and code spans.
fn link_targets(text: &str) -> Vec<String> {
    let mut targets = Vec::new();
    for line in prose_lines(text) {
        let mut outside_code = String::new();
        for (index, part) in line.split('`').enumerate() {
            if index % 2 == 0 {
                outside_code.push_str(part);
            }
        }
        let mut rest = outside_code.as_str();
        while let Some(start) = rest.find("](") {
            rest = &rest[start + 2..];
            let end = rest.find(')').unwrap_or(rest.len());
            targets.push(rest[..end].trim().to_owned());
            rest = &rest[end..];
        }
    }
    targets
}

/// The anchors GitHub gives the headings of a Markdown page: lower case,
/// punctuation but `-` and `_` dropped, spaces as `-`, and `-1`, `-2` … after
/// a repeated one.
fn anchors(text: &str) -> HashSet<String> {
    let mut seen = HashSet::new();
    for line in prose_lines(text) {
        let Some(heading) = line.strip_prefix('#') else {
            continue;
        };
        let heading = heading.trim_start_matches('#').trim();
        let base: String = heading
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        let mut anchor = base.clone();
        let mut repeat = 0;
        while !seen.insert(anchor.clone()) {
            repeat += 1;
            anchor = format!("{base}-{repeat}");
        }
    }
    seen
}

/// The lines of a Markdown page outside fenced code blocks.
fn prose_lines(text: &str) -> Vec<&str> {
    let mut in_fence = false;
    text.lines()
        .filter(|line| {
            if line.trim_start().starts_with("```") {
                in_fence = !in_fence;
                return false;
            }
            !in_fence
        })
        .collect()
}
