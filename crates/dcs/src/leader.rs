//! The leader-lock transactions, built and interpreted here and nowhere else.
//!
//! Invariant: the `leader` key is only created when absent (`create_revision == 0`), only
//! rewritten when its value is already this member's name, and only deleted under the same
//! condition; each of these is a single etcd transaction, so the check and the write cannot be
//! separated by another member's write.
//!
//! Acquiring and renewing use the same transaction. A lock that already holds this member's name
//! is this member's (Patroni's `has_lock` reads it the same way), so acquiring it again succeeds
//! and moves it to the current lease. This also makes both idempotent: when an answer is lost and
//! the call is retried, the retry finds the key already ours and reports success.
//!
//! Renewal uses one nested transaction (etcd >= 3.3) rather than Patroni's sequential ones:
//! "keep if mine on my lease, else move to my lease if mine, else create if absent, else fail"
//! then happens atomically in one round trip, which cuts the renewal latency and
//! leaves no window between the checks.

use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp, TxnOpResponse, TxnResponse};

/// Nothing to do if the lock holds my name on my lease (the keep-alive already extended it);
/// else if it holds my name, move it to `lease`; else if it is absent, create it; else fail.
///
/// Skipping the write in the common case means a steady leader costs one keep-alive per cycle
/// and no raft write, and produces no watch event, as in Patroni.
pub(crate) fn hold(key: &str, name: &str, lease: i64) -> Txn {
    let put = || TxnOp::put(key, name, Some(PutOptions::new().with_lease(lease)));
    let create_if_absent = Txn::new().when([Compare::create_revision(key, CompareOp::Equal, 0)]).and_then([put()]);
    // A value comparison against a missing key is false, so the absent case falls through.
    let move_to_lease = Txn::new()
        .when([Compare::value(key, CompareOp::Equal, name)])
        .and_then([put()])
        .or_else([TxnOp::txn(create_if_absent)]);
    Txn::new()
        .when([Compare::value(key, CompareOp::Equal, name), Compare::lease(key, CompareOp::Equal, lease)])
        .or_else([TxnOp::txn(move_to_lease)])
}

/// Whether the [`hold`] transaction left the lock with us: some level of the chain succeeded.
pub(crate) fn held(resp: &TxnResponse) -> bool {
    resp.succeeded()
        || resp.op_responses().into_iter().any(|op| matches!(op, TxnOpResponse::Txn(inner) if held(&inner)))
}

/// Deletes the lock if it holds my name.
pub(crate) fn release(key: &str, name: &str) -> Txn {
    Txn::new().when([Compare::value(key, CompareOp::Equal, name)]).and_then([TxnOp::delete(key, None)])
}
