//! The documentation cannot drift from the binary: the settings tables of
//! `docs/operations.md` list exactly the flags `server --help` and `server token --help`
//! print, with the same environment variables and defaults.

use std::{collections::BTreeMap, path::Path, process::Command};

/// One flag as `--help` describes it.
#[derive(Debug, Default, Clone, PartialEq)]
struct Flag {
    env: Option<String>,
    default: Option<String>,
}

/// The flags of `server <args> --help`, with their `[env: …]` and `[default: …]`.
fn help_flags(args: &[&str]) -> BTreeMap<String, Flag> {
    let output = Command::new(env!("CARGO_BIN_EXE_server"))
        .args(args)
        .arg("--help")
        .output()
        .expect("run server --help");
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8(output.stdout).unwrap();
    let mut flags = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let trimmed = line.trim_start();
        // A flag's first line: `      --name <VALUE>   text` or `  -h, --help`.
        let flag = trimmed
            .strip_prefix("-h, ")
            .or_else(|| trimmed.strip_prefix("-V, "))
            .unwrap_or(trimmed);
        if line.starts_with("  ") && flag.starts_with("--") {
            let name = flag[2..]
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                .next()
                .unwrap()
                .to_owned();
            flags.insert(name.clone(), Flag::default());
            current = Some(name);
        }
        let Some(name) = &current else { continue };
        let entry = flags.get_mut(name).unwrap();
        if let Some(env) = bracketed(line, "[env: ") {
            entry.env = Some(env.split('=').next().unwrap().to_owned());
        }
        if let Some(default) = bracketed(line, "[default: ") {
            entry.default = Some(default.to_owned());
        }
    }
    flags.remove("help");
    flags.remove("version");
    assert!(flags.len() > 3, "no flags read from\n{text}");
    flags
}

fn bracketed<'a>(line: &'a str, open: &str) -> Option<&'a str> {
    let start = line.find(open)? + open.len();
    let end = start + line[start..].find(']')?;
    Some(&line[start..end])
}

/// The rows of the first table after `heading` in `docs/operations.md`, as cells.
fn table_after(heading: &str) -> Vec<Vec<String>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/operations.md");
    let text = std::fs::read_to_string(&path).expect("read docs/operations.md");
    let section = &text[text
        .find(heading)
        .unwrap_or_else(|| panic!("no {heading:?} in {}", path.display()))..];
    section
        .lines()
        .skip_while(|line| !line.starts_with('|'))
        .take_while(|line| line.starts_with('|'))
        .skip(2) // the header and its rule
        .map(|line| {
            line.trim_matches('|')
                .split(" | ")
                .map(|cell| cell.trim().to_owned())
                .collect()
        })
        .collect()
}

/// `` `--name` `` → `name`; anything else fails the test.
fn flag_name(cell: &str) -> String {
    let name = cell
        .strip_prefix("`--")
        .and_then(|rest| rest.strip_suffix('`'))
        .unwrap_or_else(|| panic!("the first cell names one flag, like `--addr`: {cell:?}"));
    name.to_owned()
}

/// A documented default agrees with clap's: it shows clap's value in backticks, and shows
/// no value in backticks where clap has none (it describes what happens instead).
fn assert_default(flag: &str, documented: &str, help: Option<&str>) {
    match help {
        Some(value) => assert!(
            documented.starts_with(&format!("`{value}`")),
            "--{flag}: the table says the default is {documented:?}, `server --help` says {value:?}"
        ),
        None => assert!(
            !documented.starts_with('`') || documented.contains(' '),
            "--{flag}: the table gives a default ({documented:?}) that `server --help` does not"
        ),
    }
}

#[test]
fn the_settings_table_lists_exactly_the_flags_of_server_help() {
    let help = help_flags(&[]);
    let rows = table_after("## Settings");
    let mut documented = BTreeMap::new();
    for row in &rows {
        assert_eq!(row.len(), 4, "flag | variable | default | meaning: {row:?}");
        let name = flag_name(&row[0]);
        assert!(
            documented.insert(name.clone(), row.clone()).is_none(),
            "--{name} is listed twice"
        );
    }
    let help_names: Vec<_> = help.keys().cloned().collect();
    let doc_names: Vec<_> = documented.keys().cloned().collect();
    let missing: Vec<_> = help_names
        .iter()
        .filter(|name| !documented.contains_key(*name))
        .collect();
    let extra: Vec<_> = doc_names
        .iter()
        .filter(|name| !help.contains_key(*name))
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "docs/operations.md's settings table and `server --help` differ: \
         not in the table {missing:?}, not in --help {extra:?}"
    );
    for (name, flag) in &help {
        let row = &documented[name];
        let env = flag.env.as_deref().map(|env| format!("`{env}`"));
        assert_eq!(
            Some(row[1].as_str()),
            env.as_deref(),
            "--{name}: the variable differs from `server --help`'s"
        );
        assert_default(name, &row[2], flag.default.as_deref());
        assert!(!row[3].is_empty(), "--{name} has no meaning");
    }
}

#[test]
fn the_token_table_lists_exactly_the_flags_of_server_token_help() {
    let help = help_flags(&["token"]);
    let rows = table_after("### `server token`");
    let documented: BTreeMap<String, Vec<String>> = rows
        .iter()
        .map(|row| {
            assert_eq!(row.len(), 3, "flag | default | meaning: {row:?}");
            (flag_name(&row[0]), row.clone())
        })
        .collect();
    assert_eq!(
        documented.keys().collect::<Vec<_>>(),
        help.keys().collect::<Vec<_>>(),
        "docs/operations.md's token table and `server token --help` differ"
    );
    for (name, flag) in &help {
        assert_default(name, &documented[name][1], flag.default.as_deref());
    }
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces to dashes.
fn anchor_of(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

fn anchors(text: &str) -> Vec<String> {
    let mut in_code = false;
    text.lines()
        .filter(|line| {
            if line.starts_with("```") {
                in_code = !in_code;
            }
            !in_code && line.starts_with('#')
        })
        .map(|line| anchor_of(line.trim_start_matches('#')))
        .collect()
}

#[test]
fn links_between_the_documents_lead_somewhere() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = vec![
        root.join("README.md"),
        root.join("ARCHITECTURE.md"),
        root.join("SECURITY.md"),
        root.join("bench/README.md"),
        root.join("loadgen/README.md"),
    ];
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        files.push(entry.unwrap().path());
    }
    let mut broken = Vec::new();
    let mut checked = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let mut rest = text.as_str();
        while let Some(at) = rest.find("](") {
            rest = &rest[at + 2..];
            let Some(end) = rest.find(')') else { break };
            let target = &rest[..end];
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (path, anchor) = target.split_once('#').unwrap_or((target, ""));
            let linked = if path.is_empty() {
                file.clone()
            } else {
                file.parent().unwrap().join(path)
            };
            checked += 1;
            if !linked.exists() {
                broken.push(format!("{}: {target} (no such file)", file.display()));
            } else if !anchor.is_empty() {
                let text = std::fs::read_to_string(&linked).unwrap_or_default();
                if !anchors(&text).iter().any(|known| known == anchor) {
                    broken.push(format!("{}: {target} (no such heading)", file.display()));
                }
            }
        }
    }
    assert!(checked > 20, "only {checked} links found");
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}
