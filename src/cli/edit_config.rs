//! `rampart show-config` and `rampart edit-config`: the cluster-wide (dynamic) configuration in
//! the DCS `config` key, shown and changed as patronictl does.
//!
//! The configuration is shown as the agents read it (every key with its value in force).
//! `edit-config` builds the new configuration from `-s`, `-p`, `--apply`, `--replace` or an editor
//! session, shows a unified diff, asks (unless `--force`) and writes it with compare-and-swap on
//! the key's revision, so a concurrent change is never overwritten. A configuration the agents
//! would refuse (wrong types, a PostgreSQL parameter value the server would refuse) is refused
//! here first, before anything is written; timeouts that break `loop_wait + 2 * retry_timeout <=
//! ttl` are lowered as Patroni does.

use std::io::Read;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use rampart_core::Cluster;
use rampart_dcs::Dcs;
use serde_json::Value;

use super::config_patch::{assign, merge, parse_assignment, validate};
use super::prompt::Console;
use super::session::{block_on, Session};
use super::target::{self, TargetArgs};
use super::{diff, yaml};

/// Options of `rampart show-config`.
#[derive(clap::Args, Debug, Clone)]
pub struct ShowArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// The cluster (default: the configuration's `scope`).
    pub cluster: Option<String>,
}

/// Options of `rampart edit-config`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct EditArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// The cluster (default: the configuration's `scope`).
    pub cluster: Option<String>,
    /// Set a key (dots for nested keys, value as YAML, null deletes), e.g. -s ttl=20 or
    /// -s postgresql.use_pg_rewind=true. Repeatable.
    #[arg(short = 's', long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Set a PostgreSQL parameter (postgresql.parameters.NAME), e.g. -p max_connections=200.
    /// Repeatable.
    #[arg(short = 'p', long = "pg", value_name = "NAME=VALUE")]
    pub pg: Vec<String>,
    /// Merge the YAML in FILE (- for stdin) into the configuration; null values delete keys.
    #[arg(long, value_name = "FILE")]
    pub apply: Option<String>,
    /// Replace the whole configuration with the YAML in FILE (- for stdin).
    #[arg(long, value_name = "FILE")]
    pub replace: Option<String>,
    /// Apply without asking.
    #[arg(long)]
    pub force: bool,
    /// Do not show the diff.
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

/// The configuration as the agents read it, as JSON.
pub fn current_config(cluster: &Cluster, scope: &str, verb: &str) -> Result<Value> {
    let Some(cfg) = &cluster.config else {
        bail!("{verb}: cluster {scope} has no configuration in the DCS yet (the config key is written when the cluster is initialized)");
    };
    Ok(serde_json::to_value(cfg)?)
}

/// `rampart show-config`.
pub fn run_show(args: ShowArgs) -> Result<()> {
    let target = target::resolve(&args.target, args.cluster.as_deref())?;
    block_on(async move {
        let session = Session::open(target).await?;
        let cluster = session.cluster().await?;
        print!("{}", yaml::to_block(&current_config(&cluster, session.scope(), "show-config")?));
        Ok(())
    })
}

/// Reads YAML from FILE or stdin (`-`).
fn read_yaml(source: &str, flag: &str) -> Result<Value> {
    let text = if source == "-" {
        let mut t = String::new();
        std::io::stdin().read_to_string(&mut t).context("reading stdin")?;
        t
    } else {
        std::fs::read_to_string(source).with_context(|| format!("edit-config: reading {flag} {source}"))?
    };
    let origin = if source == "-" { format!("{flag} (stdin)") } else { source.to_string() };
    let v = rampart_config::yaml_to_json(&text, &origin)?;
    if !v.is_object() {
        bail!("edit-config: {origin}: expected a mapping of configuration keys");
    }
    Ok(v)
}

/// The new configuration from the options, or `None` when none was given (then the editor).
pub fn from_options(
    before: &Value,
    args: &EditArgs,
    read: &dyn Fn(&str, &str) -> Result<Value>,
) -> Result<Option<Value>> {
    let mut changed = before.clone();
    let mut any = false;
    if let Some(f) = &args.replace {
        changed = read(f, "--replace")?;
        any = true;
    }
    if let Some(f) = &args.apply {
        merge(&mut changed, &read(f, "--apply")?);
        any = true;
    }
    for s in &args.set {
        assign(&mut changed, &parse_assignment(s, false)?);
        any = true;
    }
    for p in &args.pg {
        assign(&mut changed, &parse_assignment(p, true)?);
        any = true;
    }
    Ok(any.then_some(changed))
}

/// Opens `$EDITOR` (else `editor` when installed, else `vi`) on `text`; returns the edited text.
fn edit_in_editor(text: &str, scope: &str) -> Result<String> {
    let editor = std::env::var("EDITOR").ok().filter(|e| !e.trim().is_empty()).unwrap_or_else(|| {
        let on_path = |name: &str| {
            std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
        };
        if on_path("editor") {
            "editor".into()
        } else {
            "vi".into()
        }
    });
    let path = temp_file(scope)?;
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    // Through the shell, so that EDITOR may carry arguments (`code --wait`).
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("rampart-edit-config")
        .arg(&path)
        .status();
    let edited = std::fs::read_to_string(&path);
    let _ = std::fs::remove_file(&path);
    let status = status.with_context(|| format!("edit-config: starting the editor ({editor})"))?;
    if !status.success() {
        bail!("edit-config: the editor ({editor}) exited with {status}; configuration not changed");
    }
    edited.context("edit-config: reading the edited file")
}

/// A new private file in the temporary directory.
fn temp_file(scope: &str) -> Result<PathBuf> {
    use std::os::unix::fs::OpenOptionsExt;
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    let path =
        std::env::temp_dir().join(format!("{}-config-{}-{stamp}.yaml", scope.replace('/', "_"), std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    Ok(path)
}

/// `rampart edit-config`.
pub fn run_edit(args: EditArgs) -> Result<()> {
    let target = target::resolve(&args.target, args.cluster.as_deref())?;
    block_on(async move {
        let session = Session::open(target).await?;
        let mut console = Console::stdio("edit-config");
        let cluster = session.cluster().await?;
        let before = current_config(&cluster, session.scope(), "edit-config")?;
        let before_text = yaml::to_block(&before);
        let changed = match from_options(&before, &args, &read_yaml)? {
            Some(c) => c,
            None => {
                if !console.is_interactive() {
                    bail!(
                        "edit-config: nothing to change was given (-s, -p, --apply, --replace) and stdin is not a \
                         terminal, so no editor can be opened"
                    );
                }
                let edited = edit_in_editor(&before_text, session.scope())?;
                let v = rampart_config::yaml_to_json(&edited, "the edited configuration")?;
                if v.is_null() {
                    Value::Object(Default::default())
                } else {
                    v
                }
            }
        };
        if changed == before {
            if !args.quiet {
                println!("Not changed");
            }
            return Ok(());
        }
        let changed = validate(&changed)?;
        if !args.quiet {
            print!(
                "{}",
                colour(&diff::unified(&before_text, &yaml::to_block(&changed), "config (DCS)", "config (new)"))
            );
        }
        let from_stdin = args.apply.as_deref() == Some("-") || args.replace.as_deref() == Some("-");
        if from_stdin && !args.force {
            bail!("edit-config: the new configuration was read from stdin, which cannot also confirm it; re-run with --force to apply it");
        }
        if !args.force && !console.confirm("Apply these changes?")? {
            bail!("edit-config: aborted; configuration not changed");
        }
        let json = serde_json::to_string(&changed)?;
        let written = session.dcs.set_config(&json, Some(cluster.config_revision), session.deadline()).await?;
        if !written {
            bail!(
                "edit-config: the configuration was changed by someone else meanwhile (it is no longer at revision {}); \
                 nothing was written, run edit-config again",
                cluster.config_revision
            );
        }
        println!("Configuration changed");
        Ok(())
    })
}

/// Colours a diff for a terminal (red removals, green additions); plain otherwise.
fn colour(diff: &str) -> String {
    use std::io::IsTerminal;
    if !std::io::stdout().is_terminal() || std::env::var_os("NO_COLOR").is_some() {
        return diff.to_string();
    }
    diff.lines()
        .map(|l| {
            let code = match l.chars().next() {
                Some('+') if !l.starts_with("+++") => "32",
                Some('-') if !l.starts_with("---") => "31",
                Some('@') => "36",
                _ => return format!("{l}\n"),
            };
            format!("\x1b[{code}m{l}\x1b[0m\n")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn no_files(_: &str, _: &str) -> Result<Value> {
        panic!("no file expected")
    }

    #[test]
    fn options_build_the_new_configuration_in_patronictl_order() {
        let before = json!({"ttl": 30, "postgresql": {"parameters": {"max_connections": 100}}});
        let args =
            EditArgs { set: vec!["ttl=20".into()], pg: vec!["max_connections=200".into()], ..Default::default() };
        let after = from_options(&before, &args, &no_files).unwrap().unwrap();
        assert_eq!(after, json!({"ttl": 20, "postgresql": {"parameters": {"max_connections": 200}}}));
        assert_eq!(from_options(&before, &EditArgs::default(), &no_files).unwrap(), None, "no option: the editor");

        // --replace first, then --apply merged into it, then -s.
        let files = |f: &str, _: &str| -> Result<Value> {
            Ok(match f {
                "r.yml" => json!({"loop_wait": 5, "ttl": 30}),
                _ => json!({"loop_wait": null, "retry_timeout": 5}),
            })
        };
        let args = EditArgs {
            replace: Some("r.yml".into()),
            apply: Some("a.yml".into()),
            set: vec!["pause=true".into()],
            ..Default::default()
        };
        assert_eq!(
            from_options(&before, &args, &files).unwrap().unwrap(),
            json!({"ttl": 30, "retry_timeout": 5, "pause": true})
        );
    }

    #[test]
    fn shown_configuration_has_every_key_in_force() {
        let c = crate::cli::members::tests::cluster(&[(
            "config",
            r#"{"ttl":20,"loop_wait":5,"retry_timeout":5,"synchronous_mode":true}"#,
        )]);
        let v = current_config(&c, "pg", "show-config").unwrap();
        assert_eq!(v["ttl"], 20);
        assert_eq!(v["synchronous_mode"], true, "keys Rampart does not interpret are kept");
        assert_eq!(v["maximum_lag_on_failover"], 1048576);
        let e = current_config(&crate::cli::members::tests::cluster(&[]), "pg", "show-config").unwrap_err();
        assert!(e.to_string().starts_with("show-config: cluster pg has no configuration in the DCS yet"), "{e}");
    }
}
