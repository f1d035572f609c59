//! Where each statement of one client's session runs when the read-write port balances reads
//! (`proxy.load_balance`): the rules of transactions and of `disable_load_balance_on_write`, as a
//! pure state machine fed with each statement's class and each ReadyForQuery's status.
//!
//! The rules:
//! * outside a transaction block a read may run on a replica (which one, and whether one has
//!   replayed the session's last write, is the caller's choice); anything else runs on the
//!   primary;
//! * `BEGIN READ ONLY`, or any `BEGIN` under `default_transaction_read_only`, runs the whole
//!   transaction on one replica; `BEGIN ... SERIALIZABLE` runs it on the primary;
//! * any other `BEGIN` is answered by the proxy and the transaction opens on the server of its
//!   first statement: a replica for a read, else the primary. Its reads run on that replica
//!   until its first write, which opens the transaction on the primary too; from then on it runs
//!   on the primary (with `off`, its reads still go to the replica). Statements that belong to
//!   the transaction (savepoints, cursors, `SET LOCAL`) count as writes here: they must live
//!   where the transaction's writes do. Its end ends it on every server it opened on;
//! * after a write, `trans_transaction` keeps the session's later transaction blocks on the
//!   primary, and `always` every later statement;
//! * a transaction that failed stays on the server that failed it until it ends (the client
//!   gets that server's errors, as on a direct connection);
//! * session state (`SET` of an unreported parameter, `PREPARE`, `LISTEN`, temporary tables,
//!   ...) runs on the primary, and once the caller pins the session ([`Router::pin`]) the rest of
//!   it runs there: no replica has that state. Inside a read-only transaction on a replica such a
//!   statement runs on the primary outside the transaction (a `ROLLBACK` does not undo it there).
//!
//! Invariant: a statement that is not a read ([`Class::Read`]) is never sent to a replica, except
//! inside a read-only transaction (where the replica refuses a write as the primary would).

pub use rampart_config::proxy_split::OnWrite;

use super::classify::{Class, TxnMode};

/// Where a statement runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// A replica (the caller picks one that has replayed what the session must see; the primary
    /// when there is none).
    Replica,
    /// The primary.
    Primary,
}

/// What to do with a statement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Run it on `target`; with `begin_first`, open the client's deferred transaction there first
    /// (with the client's own `BEGIN`, its answer not passed on).
    Run {
        /// Where.
        target: Target,
        /// The transaction block must be opened there first.
        begin_first: bool,
    },
    /// A `BEGIN`: answer it as the server would (`BEGIN`, then ReadyForQuery `T`); the
    /// transaction opens with its first statement.
    AnswerBegin,
    /// The end of a transaction that never ran anything: answer it (`COMMIT` or `ROLLBACK`,
    /// then ReadyForQuery `I`).
    AnswerEnd,
    /// The end of a transaction open on `main` (which answers the client) and, when `also` says
    /// so, on the other server too (ended there unseen).
    End {
        /// The server whose answer the client gets.
        main: Target,
        /// The other server the transaction is open on, if any.
        also: Option<Target>,
    },
}

/// What the caller knows of the session and the replicas when it asks about a statement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Context {
    /// The session's `default_transaction_read_only`.
    pub read_only_default: bool,
    /// A `BEGIN` may be answered by the proxy (a simple query; an extended-protocol `BEGIN`
    /// opens its block on the primary).
    pub deferrable: bool,
    /// A replica may serve this session's reads now (read-your-writes: one has replayed the
    /// session's last write); otherwise reads that would open on a replica run on the primary.
    pub replica_ok: bool,
}

impl Default for Context {
    fn default() -> Context {
        Context { read_only_default: false, deferrable: true, replica_ok: true }
    }
}

/// The client's transaction block as the router follows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Block {
    /// Not in a transaction block.
    Idle,
    /// `BEGIN` answered; nothing run yet.
    Deferred(TxnMode),
    /// A read-only transaction on a replica, or a serializable one on the primary.
    Whole(Target),
    /// Open on a replica (reads), on the primary (since its first write), or both.
    Open { replica: bool, primary: bool },
    /// Failed on that server: everything goes there until the block ends.
    Failed(Target, Option<Target>),
}

/// One session's router.
#[derive(Clone, Debug)]
pub struct Router {
    on_write: OnWrite,
    block: Block,
    /// The session wrote (a write was sent on the primary).
    wrote: bool,
    /// Session state pins the session to the primary.
    pinned: bool,
}

impl Router {
    /// A new session's router.
    pub fn new(on_write: OnWrite) -> Router {
        Router { on_write, block: Block::Idle, wrote: false, pinned: false }
    }

    /// The session keeps state in its primary's session from now on (`SET` of an unreported
    /// parameter, `PREPARE`, `LISTEN`, a temporary object): it stays on the primary.
    pub fn pin(&mut self) {
        self.pinned = true;
    }

    /// Whether the session is pinned to the primary.
    pub fn pinned(&self) -> bool {
        self.pinned
    }

    /// Whether the session wrote.
    pub fn wrote(&self) -> bool {
        self.wrote
    }

    /// Where the next statement, of class `class`, runs, given `cx`.
    pub fn statement(&mut self, class: Class, cx: Context) -> Decision {
        let Context { read_only_default, deferrable, replica_ok } = cx;
        let primary = Decision::Run { target: Target::Primary, begin_first: false };
        let replica = Decision::Run { target: Target::Replica, begin_first: false };
        if class == Class::End {
            if let Some(end) = self.end_block() {
                return end;
            }
        }
        if self.pinned {
            return self.pinned_statement(class);
        }
        match self.block {
            Block::Failed(main, _) => Decision::Run { target: main, begin_first: false },
            Block::Whole(target) => match class {
                // Session state belongs to the primary's session, even from a read-only block.
                Class::Session => primary,
                _ => {
                    self.wrote |= target == Target::Primary && matches!(class, Class::Write(_));
                    Decision::Run { target, begin_first: false }
                }
            },
            Block::Idle => match class {
                Class::Read if replica_ok && self.balances_outside_blocks() => replica,
                Class::Begin(mode) => {
                    let read_only = mode.read_only.unwrap_or(read_only_default);
                    if read_only && replica_ok {
                        self.block = Block::Whole(Target::Replica);
                        replica
                    } else if read_only || mode.serializable || !deferrable || self.blocks_on_primary() {
                        self.block = Block::Whole(Target::Primary);
                        primary
                    } else {
                        self.block = Block::Deferred(mode);
                        Decision::AnswerBegin
                    }
                }
                _ => {
                    self.wrote |= matches!(class, Class::Write(_));
                    primary
                }
            },
            Block::Deferred(_) => match class {
                Class::Read if replica_ok && self.balances_outside_blocks() => {
                    self.block = Block::Open { replica: true, primary: false };
                    Decision::Run { target: Target::Replica, begin_first: true }
                }
                _ => {
                    self.wrote |= matches!(class, Class::Write(_));
                    self.block = Block::Open { replica: false, primary: true };
                    Decision::Run { target: Target::Primary, begin_first: true }
                }
            },
            Block::Open { replica: on_replica, primary: on_primary } => match class {
                // A block's reads stay on the replica part it opened; with `off`, reads after a
                // write go there too (opening it if the replica qualifies).
                Class::Read if !on_primary || (self.on_write == OnWrite::Off && (on_replica || replica_ok)) => {
                    self.block = Block::Open { replica: true, primary: on_primary };
                    Decision::Run { target: Target::Replica, begin_first: !on_replica }
                }
                _ => {
                    self.wrote |= matches!(class, Class::Write(_));
                    self.block = Block::Open { replica: on_replica, primary: true };
                    Decision::Run { target: Target::Primary, begin_first: !on_primary }
                }
            },
        }
    }

    /// Ends the block open now: where its end runs, or that the proxy answers it (a deferred
    /// block never opened on a server); `None` outside a block.
    fn end_block(&mut self) -> Option<Decision> {
        let end = match self.block {
            Block::Idle => return None,
            Block::Failed(main, also) => Decision::End { main, also },
            Block::Whole(main) => Decision::End { main, also: None },
            Block::Deferred(_) => Decision::AnswerEnd,
            Block::Open { replica, primary } => match (primary, replica) {
                (true, true) => Decision::End { main: Target::Primary, also: Some(Target::Replica) },
                (false, true) => Decision::End { main: Target::Replica, also: None },
                _ => Decision::End { main: Target::Primary, also: None },
            },
        };
        self.block = Block::Idle;
        Some(end)
    }

    /// A pinned session: everything on the primary; a block open elsewhere still ends there.
    fn pinned_statement(&mut self, class: Class) -> Decision {
        let primary = Decision::Run { target: Target::Primary, begin_first: false };
        match (self.block, class) {
            (Block::Failed(main, _), _) => Decision::Run { target: main, begin_first: false },
            (Block::Deferred(_), _) => {
                self.wrote |= matches!(class, Class::Write(_));
                self.block = Block::Open { replica: false, primary: true };
                Decision::Run { target: Target::Primary, begin_first: true }
            }
            (Block::Open { replica, primary: false }, _) => {
                self.wrote |= matches!(class, Class::Write(_));
                self.block = Block::Open { replica, primary: true };
                Decision::Run { target: Target::Primary, begin_first: true }
            }
            (Block::Idle, Class::Begin(_)) => {
                self.block = Block::Whole(Target::Primary);
                primary
            }
            _ => {
                self.wrote |= matches!(class, Class::Write(_));
                primary
            }
        }
    }

    /// A ReadyForQuery from the server that ran the last statement (`on`), with its status:
    /// `I` ends the block the router follows, `E` keeps the block on that server until it ends.
    pub fn ready(&mut self, status: crate::backend::TransactionStatus, on: Target) {
        use crate::backend::TransactionStatus as S;
        match (status, self.block) {
            // An autocommit statement, or an answered BEGIN before its statement: nothing open.
            (S::Idle, Block::Deferred(_)) => {}
            (S::Idle, _) => self.block = Block::Idle,
            (S::Failed, Block::Open { replica, primary }) => {
                let other = match on {
                    Target::Primary if replica => Some(Target::Replica),
                    Target::Replica if primary => Some(Target::Primary),
                    _ => None,
                };
                self.block = Block::Failed(on, other);
            }
            (S::Failed, Block::Whole(t)) => self.block = Block::Failed(t, None),
            _ => {}
        }
    }

    /// Whether reads outside a transaction block (and a block's first reads) may go to a replica.
    fn balances_outside_blocks(&self) -> bool {
        !(self.pinned || self.wrote && self.on_write == OnWrite::Always)
    }

    /// Whether a new transaction block runs on the primary from its start.
    fn blocks_on_primary(&self) -> bool {
        self.wrote && matches!(self.on_write, OnWrite::TransTransaction | OnWrite::Always)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::TransactionStatus as S;
    use crate::split::classify::Why;

    const READ: Class = Class::Read;
    const WRITE: Class = Class::Write(Why::Modifies);
    const BEGIN: Class = Class::Begin(TxnMode { read_only: None, serializable: false, repeatable_read: false });
    const BEGIN_RO: Class =
        Class::Begin(TxnMode { read_only: Some(true), serializable: false, repeatable_read: false });
    const BEGIN_RW: Class =
        Class::Begin(TxnMode { read_only: Some(false), serializable: false, repeatable_read: false });
    const BEGIN_SER: Class = Class::Begin(TxnMode { read_only: None, serializable: true, repeatable_read: false });

    const RO_DEFAULT: Context = Context { read_only_default: true, deferrable: true, replica_ok: true };

    fn run(target: Target, begin_first: bool) -> Decision {
        Decision::Run { target, begin_first }
    }
    const ON_REPLICA: Decision = Decision::Run { target: Target::Replica, begin_first: false };
    const ON_PRIMARY: Decision = Decision::Run { target: Target::Primary, begin_first: false };

    /// Feeds statements, each answered by ReadyForQuery with the status a server would give
    /// (T inside a block, I outside), and returns the decisions.
    fn session(on_write: OnWrite, statements: &[Class]) -> Vec<Decision> {
        let mut r = Router::new(on_write);
        statements
            .iter()
            .map(|c| {
                let d = r.statement(*c, Context::default());
                let status = if matches!(r.block, Block::Idle) { S::Idle } else { S::InTransaction };
                let on = match d {
                    Decision::Run { target, .. } | Decision::End { main: target, .. } => target,
                    _ => Target::Primary,
                };
                if !matches!(d, Decision::AnswerBegin | Decision::AnswerEnd) {
                    r.ready(status, on);
                }
                d
            })
            .collect()
    }

    #[test]
    fn autocommit_reads_go_to_a_replica_and_everything_else_to_the_primary() {
        let got = session(
            OnWrite::Transaction,
            &[READ, WRITE, READ, Class::InTransaction, Class::End, Class::Write(Why::Function)],
        );
        assert_eq!(got, vec![ON_REPLICA, ON_PRIMARY, ON_REPLICA, ON_PRIMARY, ON_PRIMARY, ON_PRIMARY]);
    }

    #[test]
    fn a_read_only_transaction_runs_whole_on_a_replica() {
        let got = session(OnWrite::Transaction, &[BEGIN_RO, READ, WRITE, Class::InTransaction, Class::End]);
        let end = Decision::End { main: Target::Replica, also: None };
        assert_eq!(got, vec![ON_REPLICA, ON_REPLICA, ON_REPLICA, ON_REPLICA, end]);
        let mut r = Router::new(OnWrite::Transaction);
        assert_eq!(r.statement(BEGIN, RO_DEFAULT), ON_REPLICA, "under default_transaction_read_only");
        assert_eq!(r.statement(BEGIN_RW, RO_DEFAULT), ON_REPLICA, "still in the first block");
        let mut r = Router::new(OnWrite::Transaction);
        assert_eq!(r.statement(BEGIN_RW, RO_DEFAULT), Decision::AnswerBegin, "READ WRITE overrides the default");
    }

    #[test]
    fn a_serializable_transaction_runs_whole_on_the_primary() {
        let got = session(OnWrite::Transaction, &[BEGIN_SER, READ, Class::End]);
        assert_eq!(got, vec![ON_PRIMARY, ON_PRIMARY, Decision::End { main: Target::Primary, also: None }]);
    }

    #[test]
    fn a_transaction_reads_on_a_replica_until_its_first_write_then_stays_on_the_primary() {
        let got = session(OnWrite::Transaction, &[BEGIN, READ, READ, WRITE, READ, Class::End, READ]);
        assert_eq!(
            got,
            vec![
                Decision::AnswerBegin,
                run(Target::Replica, true),
                ON_REPLICA,
                run(Target::Primary, true),
                ON_PRIMARY,
                Decision::End { main: Target::Primary, also: Some(Target::Replica) },
                ON_REPLICA,
            ]
        );
    }

    #[test]
    fn a_transaction_that_writes_first_runs_on_the_primary_only() {
        let got = session(OnWrite::Transaction, &[BEGIN, WRITE, READ, Class::End]);
        assert_eq!(
            got,
            vec![
                Decision::AnswerBegin,
                run(Target::Primary, true),
                ON_PRIMARY,
                Decision::End { main: Target::Primary, also: None }
            ]
        );
    }

    #[test]
    fn savepoints_cursors_and_set_local_live_where_the_writes_do() {
        let got = session(OnWrite::Transaction, &[BEGIN, READ, Class::InTransaction, READ, Class::End]);
        assert_eq!(got[2], run(Target::Primary, true));
        assert_eq!(got[3], ON_PRIMARY);
        assert_eq!(got[4], Decision::End { main: Target::Primary, also: Some(Target::Replica) });
    }

    #[test]
    fn an_empty_transaction_is_answered_without_a_server() {
        let got = session(OnWrite::Transaction, &[BEGIN, Class::End, READ]);
        assert_eq!(got, vec![Decision::AnswerBegin, Decision::AnswerEnd, ON_REPLICA]);
    }

    #[test]
    fn trans_transaction_keeps_later_blocks_on_the_primary_but_not_autocommit_reads() {
        let got = session(OnWrite::TransTransaction, &[BEGIN, WRITE, Class::End, READ, BEGIN, READ, Class::End]);
        assert_eq!(got[3], ON_REPLICA);
        assert_eq!(got[4], ON_PRIMARY, "the block opens on the primary");
        assert_eq!(got[5], ON_PRIMARY);
        let before_any_write = session(OnWrite::TransTransaction, &[BEGIN, READ]);
        assert_eq!(before_any_write[1], run(Target::Replica, true));
    }

    #[test]
    fn always_keeps_every_read_after_a_write_on_the_primary() {
        let got = session(OnWrite::Always, &[READ, WRITE, READ, BEGIN, READ, Class::End]);
        assert_eq!(got[0], ON_REPLICA);
        assert_eq!(
            &got[2..],
            &[ON_PRIMARY, ON_PRIMARY, ON_PRIMARY, Decision::End { main: Target::Primary, also: None }]
        );
    }

    #[test]
    fn off_keeps_balancing_reads_after_a_write_in_the_transaction() {
        let got = session(OnWrite::Off, &[BEGIN, WRITE, READ, READ, Class::End]);
        assert_eq!(
            got,
            vec![
                Decision::AnswerBegin,
                run(Target::Primary, true),
                run(Target::Replica, true),
                ON_REPLICA,
                Decision::End { main: Target::Primary, also: Some(Target::Replica) },
            ]
        );
    }

    #[test]
    fn a_failed_transaction_stays_on_the_server_that_failed_it() {
        let mut r = Router::new(OnWrite::Transaction);
        assert_eq!(r.statement(BEGIN, Context::default()), Decision::AnswerBegin);
        assert_eq!(r.statement(READ, Context::default()), run(Target::Replica, true));
        r.ready(S::Failed, Target::Replica);
        assert_eq!(r.statement(WRITE, Context::default()), ON_REPLICA, "the replica says the block is aborted");
        assert_eq!(r.statement(Class::End, Context::default()), Decision::End { main: Target::Replica, also: None });
        r.ready(S::Idle, Target::Replica);
        assert_eq!(r.statement(READ, Context::default()), ON_REPLICA);
    }

    #[test]
    fn without_a_replica_that_replayed_the_sessions_write_reads_run_on_the_primary() {
        let stale = Context { replica_ok: false, ..Context::default() };
        let mut r = Router::new(OnWrite::Transaction);
        assert_eq!(r.statement(READ, stale), ON_PRIMARY);
        assert!(!r.wrote(), "a read kept on the primary is no write");
        assert_eq!(r.statement(BEGIN, stale), Decision::AnswerBegin);
        assert_eq!(r.statement(READ, stale), run(Target::Primary, true), "the block opens on the primary");
        assert_eq!(r.statement(Class::End, stale), Decision::End { main: Target::Primary, also: None });
        assert_eq!(r.statement(BEGIN_RO, stale), ON_PRIMARY, "a read-only block too");
        assert_eq!(r.statement(Class::End, stale), Decision::End { main: Target::Primary, also: None });
        assert_eq!(r.statement(READ, Context::default()), ON_REPLICA, "once a replica has it");
    }

    #[test]
    fn an_extended_protocol_begin_opens_its_block_on_the_primary() {
        let mut r = Router::new(OnWrite::Transaction);
        assert_eq!(r.statement(BEGIN, Context { deferrable: false, ..Context::default() }), ON_PRIMARY);
        assert_eq!(r.statement(READ, Context::default()), ON_PRIMARY);
    }

    #[test]
    fn session_state_pins_everything_to_the_primary() {
        let mut r = Router::new(OnWrite::Transaction);
        assert_eq!(r.statement(Class::Session, Context::default()), ON_PRIMARY);
        r.pin();
        assert_eq!(r.statement(READ, Context::default()), ON_PRIMARY);
        assert_eq!(r.statement(BEGIN_RO, Context::default()), ON_PRIMARY);
        assert_eq!(r.statement(READ, Context::default()), ON_PRIMARY);
    }

    #[test]
    fn writes_never_reach_a_replica_outside_read_only_blocks() {
        // Every sequence of up to five statements, in every mode.
        let classes = [READ, WRITE, BEGIN, BEGIN_RO, Class::End, Class::InTransaction, Class::Session];
        let modes = [OnWrite::Transaction, OnWrite::TransTransaction, OnWrite::Always, OnWrite::Off];
        for mode in modes {
            let mut stack = vec![vec![]];
            while let Some(seq) = stack.pop() {
                let mut r = Router::new(mode);
                let mut read_only_block = false;
                for c in &seq {
                    if matches!(r.block, Block::Idle) {
                        read_only_block = false;
                    }
                    let d = r.statement(*c, Context::default());
                    if *c == BEGIN_RO && matches!(r.block, Block::Whole(Target::Replica)) {
                        read_only_block = true;
                    }
                    if let Decision::Run { target: Target::Replica, .. } = d {
                        assert!(
                            *c == READ || read_only_block && *c != Class::Session,
                            "{mode:?}: {c:?} sent to a replica after {seq:?}"
                        );
                    }
                    let status = if matches!(r.block, Block::Idle) { S::Idle } else { S::InTransaction };
                    r.ready(status, Target::Primary);
                }
                if seq.len() < 5 {
                    for c in classes {
                        let mut next = seq.clone();
                        next.push(c);
                        stack.push(next);
                    }
                }
            }
        }
    }
}
