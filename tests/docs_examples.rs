//! The configurations the documentation shows are ones Rampart accepts.
//!
//! A reader copies the YAML of README.md and docs/*.md into their own files, so each `yaml`
//! block there must pass `rampart check-config` (a member's file) or `rampart check-config
//! --proxy` (an application host's file) as it stands. Only a directory the file names for the
//! host's own use (the access log's) is moved into the test's directory, because check-config
//! checks that it exists.

mod support;

use std::path::{Path, PathBuf};

/// Host directories a documented file names, which check-config wants to exist.
const HOST_DIRS: &[&str] = &["/var/log/rampart"];

/// The `yaml` blocks of a Markdown file, with the line each starts on; a block indented under a
/// list item loses its fence's indentation, as a reader copying it would drop it.
fn yaml_blocks(markdown: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut current: Option<(usize, usize, String)> = None;
    for (n, line) in markdown.lines().enumerate() {
        let indent = line.len() - line.trim_start().len();
        match &mut current {
            None if line.trim_start() == "```yaml" => current = Some((n + 2, indent, String::new())),
            Some(_) if line.trim_start() == "```" => blocks.extend(current.take().map(|(n, _, text)| (n, text))),
            Some((_, fence, text)) => {
                let strip = indent.min(*fence);
                text.push_str(&line[strip..]);
                text.push('\n');
            }
            None => {}
        }
    }
    blocks
}

fn documents() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut docs = vec![root.join("README.md")];
    let mut more: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/")
        .map(|e| e.expect("docs/ entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    more.sort();
    docs.extend(more);
    docs
}

#[test]
fn every_configuration_in_the_documentation_passes_check_config() {
    let dir = support::TestDir::new("docs-examples");
    let mut checked = 0;
    let mut failures = Vec::new();
    for doc in documents() {
        let text = std::fs::read_to_string(&doc).expect("readable document");
        for (line, mut yaml) in yaml_blocks(&text) {
            for host_dir in HOST_DIRS {
                yaml = yaml.replace(host_dir, dir.path().to_str().expect("utf-8 test dir"));
            }
            let name = format!("{}-{line}.yml", doc.file_stem().unwrap().to_string_lossy());
            let file = dir.join(&name);
            std::fs::write(&file, &yaml).expect("write the example");
            // An application host's file has a proxy section and no PostgreSQL of its own.
            let proxy_only =
                yaml.lines().any(|l| l.starts_with("proxy:")) && !yaml.lines().any(|l| l.starts_with("postgresql:"));
            let mut args = vec!["check-config".to_string()];
            if proxy_only {
                args.push("--proxy".into());
            }
            args.push(file.display().to_string());
            let out = support::rampart(&args);
            checked += 1;
            if !out.status.success() {
                failures.push(format!(
                    "{}:{line}: {}{}",
                    doc.display(),
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
        }
    }
    println!("{checked} documented configurations checked");
    assert!(checked >= 3, "the README and docs/deploy.md show configurations; found only {checked}");
    assert!(failures.is_empty(), "documented configurations refused:\n{}", failures.join("\n"));
}

#[test]
fn yaml_blocks_are_found_with_their_lines() {
    let md = "text\n```yaml\na: 1\n```\n```sh\nls\n```\n```yaml\nb: 2\nc: 3\n```\n";
    assert_eq!(yaml_blocks(md), vec![(3, "a: 1\n".to_string()), (9, "b: 2\nc: 3\n".to_string())]);
}
