//! Questions to the operator: yes/no confirmations, values with a default, and typed
//! confirmations (`remove`).
//!
//! Rules kept here:
//! * every yes/no question defaults to the safe answer, no (an empty line, end of input or an
//!   unreadable answer all mean no);
//! * a yes/no question or a value prompt is only asked on a terminal: when stdin is not one and
//!   `--force` was not given, the command stops with a message that names `--force`, rather than
//!   wait for input nobody is going to type (or take a script's stray line as an answer);
//! * typed confirmations (a cluster name, "Yes I am aware") may come from a pipe, since typing
//!   the exact text is itself the deliberate act; end of input aborts.
//!
//! Questions go to stderr, so stdout keeps only results.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{bail, Result};

/// Where questions are asked and answers read.
pub struct Console {
    input: Box<dyn BufRead>,
    output: Box<dyn Write>,
    interactive: bool,
    /// The command, for refusal messages (`switchover`, `restart`, ...).
    verb: &'static str,
}

impl Console {
    /// The process' stdin and stderr; interactive when stdin is a terminal.
    pub fn stdio(verb: &'static str) -> Console {
        let interactive = std::io::stdin().is_terminal();
        Console {
            input: Box::new(std::io::BufReader::new(std::io::stdin())),
            output: Box::new(std::io::stderr()),
            interactive,
            verb,
        }
    }

    /// A console reading `input` and writing to `output` (tests).
    #[cfg(test)]
    pub fn new(verb: &'static str, input: Box<dyn BufRead>, output: Box<dyn Write>, interactive: bool) -> Console {
        Console { input, output, interactive, verb }
    }

    /// Whether questions can be asked.
    pub fn is_interactive(&self) -> bool {
        self.interactive
    }

    /// The message for a question that cannot be asked.
    fn refusal(&self, what: &str) -> anyhow::Error {
        anyhow::anyhow!(
            "{}: {what}, but stdin is not a terminal; re-run with --force to go ahead without questions",
            self.verb
        )
    }

    fn read_line(&mut self) -> Result<Option<String>> {
        let mut line = String::new();
        if self.input.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        Ok(Some(line.trim_end_matches(['\n', '\r']).to_string()))
    }

    /// Writes a warning line (stderr in real use), whether or not questions can be asked.
    pub fn warn(&mut self, text: &str) -> Result<()> {
        writeln!(self.output, "Warning: {text}")?;
        Ok(())
    }

    /// Asks `question [y/N]`. True only for `y` or `yes`.
    pub fn confirm(&mut self, question: &str) -> Result<bool> {
        if !self.interactive {
            return Err(self.refusal(&format!("this needs confirmation ({question})")));
        }
        for _ in 0..3 {
            write!(self.output, "{question} [y/N]: ")?;
            self.output.flush()?;
            let Some(answer) = self.read_line()? else {
                writeln!(self.output)?;
                return Ok(false);
            };
            match answer.trim().to_ascii_lowercase().as_str() {
                "y" | "yes" => return Ok(true),
                "" | "n" | "no" => return Ok(false),
                _ => writeln!(self.output, "Please answer y or n.")?,
            }
        }
        Ok(false)
    }

    /// Asks for a value, showing and returning `default` on an empty answer. `option` names the
    /// command-line option that gives it instead.
    pub fn ask(&mut self, question: &str, default: &str, option: &str) -> Result<String> {
        if !self.interactive {
            bail!(
                "{}: {option} was not given and stdin is not a terminal to ask for it; give {option}, or re-run with \
                 --force to take the default",
                self.verb
            );
        }
        write!(self.output, "{question} [{default}]: ")?;
        self.output.flush()?;
        match self.read_line()? {
            None => {
                writeln!(self.output)?;
                bail!("{}: aborted (no answer to \"{question}\")", self.verb)
            }
            Some(a) if a.trim().is_empty() => Ok(default.to_string()),
            Some(a) => Ok(a.trim().to_string()),
        }
    }

    /// Asks for text the operator must type exactly; from a terminal or a pipe.
    pub fn typed(&mut self, question: &str) -> Result<String> {
        write!(self.output, "{question}: ")?;
        self.output.flush()?;
        match self.read_line()? {
            Some(a) => {
                if !self.interactive {
                    // Echo what came from the pipe, so a transcript reads like a session.
                    writeln!(self.output, "{a}")?;
                }
                Ok(a.trim().to_string())
            }
            None => {
                writeln!(self.output)?;
                bail!("{}: aborted (no answer to \"{question}\" on stdin)", self.verb)
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::rc::Rc;

    /// Captured console output.
    #[derive(Clone, Default)]
    pub(crate) struct Captured(pub Rc<RefCell<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.borrow_mut().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        pub(crate) fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.borrow()).into_owned()
        }
    }

    /// A console answering with `input`; `interactive` as if stdin were a terminal.
    pub(crate) fn console(verb: &'static str, input: &str, interactive: bool) -> (Console, Captured) {
        let out = Captured::default();
        let c = Console::new(
            verb,
            Box::new(std::io::Cursor::new(input.as_bytes().to_vec())),
            Box::new(out.clone()),
            interactive,
        );
        (c, out)
    }

    #[test]
    fn confirmation_defaults_to_no() {
        for (input, want) in [
            ("y\n", true),
            ("YES\n", true),
            ("\n", false),
            ("n\n", false),
            ("", false),
            ("maybe\nmaybe\nmaybe\n", false),
            ("what\ny\n", true),
        ] {
            let (mut c, out) = console("switchover", input, true);
            assert_eq!(c.confirm("Are you sure?").unwrap(), want, "{input:?}");
            assert!(out.text().starts_with("Are you sure? [y/N]: "), "{}", out.text());
        }
    }

    #[test]
    fn no_terminal_no_question() {
        let (mut c, out) = console("switchover", "y\n", false);
        let e = c.confirm("Are you sure you want to switchover cluster pg?").unwrap_err().to_string();
        assert_eq!(
            e,
            "switchover: this needs confirmation (Are you sure you want to switchover cluster pg?), but stdin is not a \
             terminal; re-run with --force to go ahead without questions"
        );
        assert!(out.text().is_empty(), "nothing was asked");
        let e = c.ask("Candidate", "", "--candidate").unwrap_err().to_string();
        assert_eq!(
            e,
            "switchover: --candidate was not given and stdin is not a terminal to ask for it; give --candidate, or \
             re-run with --force to take the default"
        );
    }

    #[test]
    fn values_take_defaults_and_answers() {
        let (mut c, out) = console("switchover", "\n node3 \n", true);
        assert_eq!(c.ask("Primary", "node1", "--leader").unwrap(), "node1");
        assert_eq!(c.ask("Candidate", "", "--candidate").unwrap(), "node3");
        assert_eq!(out.text(), "Primary [node1]: Candidate []: ");
        let e = c.ask("When", "now", "--scheduled").unwrap_err().to_string();
        assert!(e.contains("aborted"), "{e}");
    }

    #[test]
    fn typed_answers_may_come_from_a_pipe() {
        let (mut c, out) = console("remove", "postgres\n", false);
        assert_eq!(c.typed("Please confirm the cluster name to remove").unwrap(), "postgres");
        assert_eq!(out.text(), "Please confirm the cluster name to remove: postgres\n");
        assert!(c.typed("Type \"Yes I am aware\"").unwrap_err().to_string().contains("aborted"));
    }
}
