//! One network operation in the ledger: its intent, and the notes of what
//! each step obtained, so that reconcile can undo or finish it.

use berth_plugin_api::DriverResult;
use serde::{Deserialize, Serialize};

use super::{NetworkService, OP_STEP};
use crate::store::{now_secs, Change, Intent};

/// What one step obtained, as undoing it needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub(super) enum Step {
    /// A pool IPAM reserved.
    Pool {
        /// Its id.
        pool_id: String,
    },
    /// An address IPAM handed out (bare IP).
    Address {
        /// Its pool.
        pool_id: String,
        /// The address.
        address: String,
    },
    /// The interface a join named, about to be moved into the sandbox.
    Joined {
        /// Its name in the host namespace.
        src_name: String,
    },
    /// A connect takes the gateway role from this endpoint (see
    /// `network::gateway`): its default routes are about to go and its
    /// connectivity to be revoked; rolling the connect back restores it.
    Demoted {
        /// Its id.
        endpoint: String,
        /// Its network.
        network: String,
    },
    /// A disconnect moves the gateway role to this endpoint: its routes
    /// and program are about to be made; finishing the disconnect revokes
    /// it and takes the role over again.
    Promoting {
        /// Its id.
        endpoint: String,
        /// Its network.
        network: String,
    },
}

/// An operation in flight.
#[derive(Debug)]
pub(super) struct Op<'a> {
    svc: &'a NetworkService,
    /// The intent's sequence number.
    pub seq: u64,
    key: String,
    driver: String,
    notes: Vec<u64>,
    /// What the steps obtained so far, in order.
    pub steps: Vec<Step>,
}

impl NetworkService {
    /// Records the intent of `op` on `key`.
    pub(super) fn begin(
        &self,
        op: &str,
        key: String,
        driver: &str,
        data: serde_json::Value,
    ) -> DriverResult<Op<'_>> {
        let seq = self.store.intent(&Intent {
            op: op.into(),
            key: key.clone(),
            driver: driver.into(),
            data,
            at: now_secs(),
        })?;
        Ok(Op { svc: self, seq, key, driver: driver.into(), notes: Vec::new(), steps: Vec::new() })
    }
}

impl Op<'_> {
    /// Durably notes what a step obtained.
    pub fn note(&mut self, step: Step) -> DriverResult<()> {
        let data = serde_json::json!({ "main": self.seq, "step": step });
        let seq = self.svc.store.intent(&Intent {
            op: OP_STEP.into(),
            key: self.key.clone(),
            driver: self.driver.clone(),
            data,
            at: now_secs(),
        })?;
        self.notes.push(seq);
        self.steps.push(step);
        Ok(())
    }

    /// Marks the operation done, applying `changes`, and drops its notes.
    pub fn finish(self, changes: &[Change]) -> DriverResult<()> {
        self.svc.store.finish(self.seq, changes)?;
        self.drop_notes();
        Ok(())
    }

    /// Drops the operation (it failed and was undone) and its notes.
    pub fn abandon(self) -> DriverResult<()> {
        self.svc.store.abandon(self.seq)?;
        self.drop_notes();
        Ok(())
    }

    /// Leaves the operation in the ledger for the next start to resolve
    /// (a driver call timed out, or undoing a failure failed).
    pub fn keep(self) {
        tracing::warn!(seq = self.seq, key = %self.key, "operation left in the ledger for the next start");
    }

    /// Notes stay harmless once their operation is resolved (reconcile
    /// drops notes of no pending operation); failing to drop one is logged.
    fn drop_notes(&self) {
        for n in &self.notes {
            if let Err(e) = self.svc.store.abandon(*n) {
                tracing::warn!(seq = n, "could not drop a ledger note: {e}");
            }
        }
    }
}

/// The addresses of `steps`, newest first.
pub(super) fn addresses(steps: &[Step]) -> Vec<(String, String)> {
    steps
        .iter()
        .rev()
        .filter_map(|s| match s {
            Step::Address { pool_id, address } => Some((pool_id.clone(), address.clone())),
            _ => None,
        })
        .collect()
}

/// The pools of `steps`, newest first.
pub(super) fn pools(steps: &[Step]) -> Vec<String> {
    steps
        .iter()
        .rev()
        .filter_map(|s| match s {
            Step::Pool { pool_id } => Some(pool_id.clone()),
            _ => None,
        })
        .collect()
}
