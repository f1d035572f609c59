//! `rampart completion bash|zsh|fish` and the hidden `rampart generate-man DIR`: shell completions
//! and man pages generated from the clap definitions of the binary itself, so that they always
//! match the verbs and options the binary accepts. `make deb` ships their output.
//!
//! Invariant: both read the one `Cli` definition in main.rs; nothing here lists verbs by hand.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, CommandFactory, ValueEnum};

/// The shells a completion script is generated for.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

impl From<CompletionShell> for clap_complete::Shell {
    fn from(s: CompletionShell) -> Self {
        match s {
            CompletionShell::Bash => clap_complete::Shell::Bash,
            CompletionShell::Zsh => clap_complete::Shell::Zsh,
            CompletionShell::Fish => clap_complete::Shell::Fish,
        }
    }
}

#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
    source <(rampart completion bash)                 # this bash session\n  \
    rampart completion bash > /etc/bash_completion.d/rampart\n  \
    rampart completion zsh > \"${fpath[1]}/_rampart\"\n  \
    rampart completion fish > ~/.config/fish/completions/rampart.fish")]
pub struct CompletionArgs {
    /// The shell to print the completion script for.
    #[arg(value_enum)]
    pub shell: CompletionShell,
}

#[derive(Args, Debug)]
pub struct ManArgs {
    /// Directory to write rampart.1 and one page per verb (rampart-agent.1, ...) into; created if
    /// missing.
    pub dir: PathBuf,
}

/// The binary's name, as completions register it and man pages title it.
const BIN: &str = "rampart";

/// The command line as completions should offer it: `Cli` with its hidden verbs left out.
/// clap_complete offers hidden subcommands too (clap-rs/clap#1335) and clap has no way to remove
/// one, so the root is assembled again from `Cli`'s own arguments and visible verbs.
fn completion_command() -> clap::Command {
    let full = crate::Cli::command();
    let visible: Vec<clap::Command> = full.get_subcommands().filter(|c| !c.is_hide_set()).cloned().collect();
    clap::Command::new(BIN)
        .version(env!("CARGO_PKG_VERSION"))
        .propagate_version(true)
        .subcommand_required(true)
        .args(full.get_arguments().cloned())
        .subcommands(visible)
}

/// The completion script for `shell`.
pub fn completion_script(shell: CompletionShell) -> Vec<u8> {
    let mut out = Vec::new();
    clap_complete::generate(clap_complete::Shell::from(shell), &mut completion_command(), BIN, &mut out);
    out
}

/// Writes the man pages of the binary and of every visible verb into `dir`.
pub fn write_man_pages(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    clap_mangen::generate_to(crate::Cli::command(), dir)
        .with_context(|| format!("writing man pages into {}", dir.display()))
}

/// `rampart completion SHELL`: prints the script to stdout.
pub fn run_completion(args: CompletionArgs) -> Result<()> {
    use std::io::Write;
    std::io::stdout().write_all(&completion_script(args.shell)).context("writing to stdout")
}

/// `rampart generate-man DIR`.
pub fn run_man(args: ManArgs) -> Result<()> {
    write_man_pages(&args.dir)?;
    println!("man pages written to {}", args.dir.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The verbs a user sees (`rampart --help`), as clap knows them.
    fn visible_verbs() -> Vec<String> {
        crate::Cli::command().get_subcommands().filter(|c| !c.is_hide_set()).map(|c| c.get_name().to_string()).collect()
    }

    fn script(shell: CompletionShell) -> String {
        String::from_utf8(completion_script(shell)).expect("a completion script is text")
    }

    #[test]
    fn every_visible_verb_is_completed_in_every_shell_and_the_hidden_one_is_not() {
        let verbs = visible_verbs();
        for v in ["agent", "check-config", "list", "switchover", "proxy", "demo", "completion", "version"] {
            assert!(verbs.iter().any(|x| x == v), "{v} is a visible verb");
        }
        assert!(!verbs.iter().any(|x| x == "generate-man"), "generate-man is hidden");
        for shell in [CompletionShell::Bash, CompletionShell::Zsh, CompletionShell::Fish] {
            let s = script(shell);
            for v in &verbs {
                assert!(s.contains(v.as_str()), "the {shell:?} script does not mention the verb {v}");
            }
            assert!(!s.contains("generate-man"), "the {shell:?} script offers the hidden generate-man");
        }
    }

    #[test]
    fn each_script_registers_itself_the_way_its_shell_expects() {
        let bash = script(CompletionShell::Bash);
        assert!(bash.contains("complete -F _rampart"), "bash: `complete -F _rampart ... rampart`");
        // Options of a verb are offered after it (list's --format, switchover's --candidate).
        assert!(bash.contains("--format") && bash.contains("--candidate"));
        assert!(script(CompletionShell::Zsh).starts_with("#compdef rampart"), "zsh autoloads by #compdef");
        assert!(script(CompletionShell::Fish).contains("complete -c rampart"));
    }

    #[test]
    fn the_bash_script_is_valid_bash_and_registers_the_completion() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("rampart");
        std::fs::write(&file, completion_script(CompletionShell::Bash)).unwrap();
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(format!("source {} && complete -p rampart", file.display()))
            .output()
            .expect("running bash");
        assert!(out.status.success(), "bash could not load it: {}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).contains("_rampart"), "{out:?}");
    }

    /// Renders a page with nroff (groff's man macros) and returns its words separated by single
    /// spaces (nroff justifies lines); fails on any warning, so a page that is not valid roff is
    /// caught.
    fn render(page: &Path) -> String {
        let out = std::process::Command::new("nroff")
            .args(["-man", "-ww", "-rLL=100n"])
            .arg(page)
            .env("LC_ALL", "C.UTF-8")
            .output()
            .expect("running nroff (Debian package groff-base)");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && stderr.trim().is_empty(), "nroff on {}: {stderr}", page.display());
        // Plain text: drop nroff's overstrike bold/underline (X\bX, _\bX).
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let mut plain = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            if chars.peek() == Some(&'\u{8}') {
                chars.next();
                continue;
            }
            plain.push(c);
        }
        plain.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    #[test]
    fn man_pages_for_the_binary_and_each_verb_render_with_a_name_section() {
        let dir = tempfile::tempdir().unwrap();
        write_man_pages(dir.path()).unwrap();
        let main = render(&dir.path().join("rampart.1"));
        assert!(main.contains("NAME rampart - "), "{main}");
        assert!(main.contains("rampart - Highly available PostgreSQL"), "{main}");
        for v in visible_verbs() {
            let page = dir.path().join(format!("rampart-{v}.1"));
            assert!(page.exists(), "no man page for {v}");
            let text = render(&page);
            assert!(text.contains(&format!("NAME rampart-{v} - ")), "NAME of rampart-{v}: {text}");
            assert!(main.contains(&format!("rampart-{v}(1)")), "rampart(1) refers to rampart-{v}(1)");
        }
        assert!(!dir.path().join("rampart-generate-man.1").exists(), "the hidden verb has no page");
        let agent = render(&dir.path().join("rampart-agent.1"));
        assert!(agent.contains("SYNOPSIS") && agent.contains("<CONFIG_FILE>"), "{agent}");
    }
}
