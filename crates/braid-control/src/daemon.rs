//! The contract between the REST API and the daemon: the [`Daemon`] trait, which the daemon
//! implements with a thin adapter over its engines and data-path workers, and
//! [`DaemonError`], what its methods may answer besides success.
//!
//! What this file owns: the list of operations the endpoints need and their semantics (what
//! must be atomic, what a refusal means, how long a call may take). What it does not own: HTTP
//! (the `api` module maps errors to status codes), validation a JSON parser can do (the
//! `schema` types), nor how the daemon carries a change out (engine `Command`s between
//! batches, in `crates/braid`).
//!
//! # Call protocol
//!
//! Methods are synchronous and may block briefly (a worker answers a command between two
//! batches): the router calls them on tokio's blocking pool, never on a runtime thread, with a
//! bounded number in flight. Each must return in bounded time; a worker that does not answer
//! is [`DaemonError::Unavailable`], not a hang. Reads return a consistent snapshot. Changes are
//! all or nothing: on any error, the state in force is the state before the call.

use crate::flows::FlowQuery;
use crate::metrics::LatencyHistograms;
use crate::schema::{Flow, FlowMove, FlowPage, Nic, NicUpdate, PolicyDocument, Stats, Vnic};

/// What the REST API needs from the daemon. Every type is a plain serde type from
/// [`crate::schema`]; none is braid-core's.
///
/// Implemented by the daemon's adapter (and by a fake in this crate's tests). The router
/// takes it as `Arc<dyn Daemon>`.
pub trait Daemon: Send + Sync + 'static {
    /// Every NIC, in id order, with its counters and link measurements.
    ///
    /// # Errors
    /// [`DaemonError::Unavailable`] if the snapshot cannot be had now.
    fn nics(&self) -> Result<Vec<Nic>, DaemonError>;

    /// Change NIC `name`'s capacity and/or administrative state, as one change: taking a
    /// NIC down drains its flows to the others first; if the second part of an update
    /// fails, the first is undone. Returns the NIC as it is afterwards.
    ///
    /// `update` has at least one field, and `capacity_bps` is within
    /// [`crate::schema::MIN_CAPACITY_BPS`]..=[`crate::schema::MAX_CAPACITY_BPS`] (the router
    /// checked both).
    ///
    /// # Errors
    /// [`DaemonError::NotFound`] for an unknown NIC; [`DaemonError::Refused`] if the engine
    /// refuses (e.g. taking down the last usable NIC, if the daemon forbids it).
    fn update_nic(&self, name: &str, update: &NicUpdate) -> Result<Nic, DaemonError>;

    /// The virtual NICs (today one), with queues, RSS and QoS classes.
    ///
    /// # Errors
    /// [`DaemonError::Unavailable`].
    fn vnics(&self) -> Result<Vec<Vnic>, DaemonError>;

    /// Rates, latency, reorder holds and drops by reason (`GET /v1/stats`, and `/metrics`).
    ///
    /// # Errors
    /// [`DaemonError::Unavailable`].
    fn stats(&self) -> Result<Stats, DaemonError>;

    /// The latency histograms `/metrics` shows (probe RTT and one-way delay variation per
    /// NIC, reorder hold), cumulative since start, summed over the data path's workers. The
    /// default keeps none: `/metrics` then has no histogram series.
    ///
    /// # Errors
    /// [`DaemonError::Unavailable`].
    fn latency_histograms(&self) -> Result<LatencyHistograms, DaemonError> {
        Ok(LatencyHistograms::default())
    }

    /// One page of the live flow table: the flows `query` matches whose id is above its
    /// cursor, by id, at most `query.limit` ([`FlowQuery::page`] does the selection over any
    /// iterator of flows, in bounded memory).
    ///
    /// # Errors
    /// [`DaemonError::Unavailable`].
    fn flows(&self, query: &FlowQuery) -> Result<FlowPage, DaemonError>;

    /// One flow.
    ///
    /// # Errors
    /// [`DaemonError::NotFound`] if no flow has this id (or it expired).
    fn flow(&self, id: u64) -> Result<Flow, DaemonError>;

    /// Move (or pin) a TX flow to one NIC through the flow controller, with admission.
    /// Returns the flow as it is afterwards.
    ///
    /// # Errors
    /// [`DaemonError::NotFound`] for an unknown flow; [`DaemonError::Invalid`] (field `nic`)
    /// for an unknown NIC; [`DaemonError::Refused`] when admission refuses it (no room, NIC
    /// down, an RX flow): the flow stays where it was.
    fn move_flow(&self, id: u64, request: &FlowMove) -> Result<Flow, DaemonError>;

    /// The policies in force.
    ///
    /// # Errors
    /// [`DaemonError::Unavailable`].
    fn policies(&self) -> Result<PolicyDocument, DaemonError>;

    /// Validate `document` and put it in force as a whole, atomically, on every worker (and
    /// persist it, so it survives a restart). Returns the document now in force.
    ///
    /// # Errors
    /// [`DaemonError::Invalid`] naming the field (`rules[2].qos`) and why;
    /// [`DaemonError::Refused`] when the engine cannot apply a valid document (a tunnel
    /// port that cannot be opened, a worker that refused): the old policies stay in force.
    fn replace_policies(&self, document: PolicyDocument) -> Result<PolicyDocument, DaemonError>;
}

/// Why the daemon did not do what was asked. The messages of `NotFound`, `Invalid` and
/// `Refused` go to the client; those of `Unavailable` and `Internal` only to the log.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonError {
    /// The thing asked for does not exist (404).
    #[error("not found: {what}")]
    NotFound {
        /// What was not found, for the client: `no NIC is named "eth9"`.
        what: String,
    },
    /// A value is wrong (422); the field is named as in the request body or document,
    /// `rules[2].qos`, `nic`.
    #[error("invalid value for {field}: {reason}")]
    Invalid {
        /// The field, as a JSON path in the body.
        field: String,
        /// Why, and what is allowed.
        reason: String,
    },
    /// A valid change the daemon could not apply; nothing changed (409).
    #[error("refused: {reason}")]
    Refused {
        /// Why, for the client.
        reason: String,
    },
    /// The daemon cannot answer now (stopping, a worker not answering) (503).
    #[error("unavailable: {detail}")]
    Unavailable {
        /// For the log only.
        detail: String,
    },
    /// A bug or an unexpected failure (500).
    #[error("internal error: {detail}")]
    Internal {
        /// For the log only.
        detail: String,
    },
}
