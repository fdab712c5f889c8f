//! The pipeline between the delivery layer and the network: a round's
//! messages queued per account (`session`), carried by lanes that each
//! hold a connection (`lanes`) as the wave, each account's rate and
//! concurrency (`throttle`) allow, their answers gathered for the
//! recording thread (`inbox`), and the delivery log's group commit
//! (`commit`).

pub(super) mod commit;
pub mod inbox;
pub(super) mod lanes;
pub(super) mod session;
pub mod throttle;
