//! Learning links from what passes through: a Patient released at a site with network
//! identifier systems is handed to a bounded queue ([`NetworkIndex::offer`]), and one thread
//! learns it (`NetworkIndex::learn`), off the request path. When the queue is full the
//! Patient is dropped and counted (`assent_network_learn_dropped_total`): a link missed now
//! is learnt on the patient's next release or by a discovery.
//!
//! Every learn that made links leaves one receipt (kind `network-link`, the gateway as
//! actor: no caller asked for it), naming the site patients linked and the network patient
//! (keyed on the ledger, as every receipt), and drops the decision cache of the site patients
//! linked (a network consent may now apply to them).
//!
//! Leaves out: what makes a link (`network.rs`).

use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::thread::JoinHandle;

use assent_consent::ConsortiumKey;
use assent_receipts::{AccessDecision, AccessKind, NetworkAction, Receipt, ReceiptSubjects};
use prometheus::IntCounter;

use crate::services::consent::ConsentService;
use crate::services::network::{Learned, NETWORK_SITE, NetworkIndex};
use crate::services::receipts::{PendingReceipt, ReceiptSender};

/// Patients waiting at most; beyond this they are dropped.
pub const QUEUE_CAPACITY: usize = 4_096;

enum Message {
    Patient {
        site: String,
        id: String,
        identifiers: Vec<(String, String)>,
    },
    /// Answered once every Patient queued before it is learnt (tests only send it).
    #[cfg_attr(not(any(test, feature = "testing")), allow(dead_code))]
    Flush(mpsc::Sender<()>),
}

/// The sending side: [`NetworkIndex::offer`] queues here.
pub struct Learner {
    tx: SyncSender<Message>,
    dropped: IntCounter,
    _thread: Option<JoinHandle<()>>,
}

/// What a learnt link change needs besides the index: its receipt and the decision cache.
#[derive(Clone)]
pub struct LinkEffects {
    pub receipts: ReceiptSender,
    pub consents: Arc<ConsentService>,
    pub gateway_id: String,
}

impl Learner {
    /// Starts the learner thread over `index` (a detached copy of the gateway's index).
    pub fn start(index: NetworkIndex, effects: LinkEffects, dropped: IntCounter) -> Learner {
        let (tx, rx) = mpsc::sync_channel(QUEUE_CAPACITY);
        let thread = std::thread::Builder::new()
            .name("assent-network-learner".into())
            .spawn(move || learn_loop(rx, index, effects))
            .ok();
        Learner {
            tx,
            dropped,
            _thread: thread,
        }
    }

    /// Queues a Patient of `site`; never blocks.
    pub fn queue(&self, site: &str, id: &str, identifiers: Vec<(String, String)>) {
        let message = Message::Patient {
            site: site.to_owned(),
            id: id.to_owned(),
            identifiers,
        };
        match self.tx.try_send(message) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => self.dropped.inc(),
        }
    }

    /// Waits until every Patient queued before this call is learnt (tests).
    #[cfg(any(test, feature = "testing"))]
    pub fn flush(&self) {
        let (done_tx, done_rx) = mpsc::channel();
        if self.tx.send(Message::Flush(done_tx)).is_ok() {
            let _ = done_rx.recv_timeout(std::time::Duration::from_secs(30));
        }
    }
}

fn learn_loop(rx: Receiver<Message>, index: NetworkIndex, effects: LinkEffects) {
    let clock = assent_ledger::SystemClock;
    while let Ok(message) = rx.recv() {
        match message {
            Message::Flush(done) => {
                let _ = done.send(());
            }
            Message::Patient {
                site,
                id,
                identifiers,
            } => {
                let now = assent_ledger::Clock::now_millis(&clock);
                let pairs = identifiers.iter().map(|(s, v)| (s.as_str(), v.as_str()));
                match index.learn(&site, &id, pairs, now) {
                    Ok(learned) => {
                        effects.invalidate(&learned);
                        if let Some(pending) = link_receipt(
                            &learned,
                            &site,
                            effects.consents.key(),
                            &effects.gateway_id,
                            now,
                        ) && let Err(e) = effects.receipts.write_blocking(pending)
                        {
                            tracing::error!(site = %site, error = %e, "a learnt network link has no receipt");
                        }
                    }
                    Err(e) => {
                        tracing::warn!(site = %site, error = %e, "a released Patient could not be learnt")
                    }
                }
            }
        }
    }
}

impl LinkEffects {
    /// Decisions see the links `learned` made ([`invalidate_links`]).
    pub fn invalidate(&self, learned: &Learned) {
        invalidate_links(&self.consents, learned);
    }
}

/// Decisions must see the links `learned` made: a linked site patient is decided with its
/// network patient's consents too, on every replica (`ConsentService::links_changed`).
pub fn invalidate_links(consents: &ConsentService, learned: &Learned) {
    if !learned.new_links.is_empty() {
        consents.links_changed();
    }
}

/// The receipt of the links `learned` made at `site` (`None` when it made none): kind
/// `network-link`, the gateway as actor, the site patients linked and then the network
/// patient (`network/Patient/{id}`) as its patients.
pub fn link_receipt(
    learned: &Learned,
    site: &str,
    key: &ConsortiumKey,
    gateway_id: &str,
    now_ms: i64,
) -> Option<PendingReceipt> {
    if learned.new_links.is_empty() {
        return None;
    }
    let mut subjects = ReceiptSubjects {
        actor: format!("gateway:{gateway_id}"),
        patients: Vec::new(),
        query: None,
        client_id: None,
        client_address: None,
    };
    for link in &learned.new_links {
        subjects.add_patient(link.patient.to_string());
    }
    let network_id = &learned.new_links[0].network_id;
    subjects.add_patient(format!("{NETWORK_SITE}/Patient/{network_id}"));
    let mut receipt = Receipt::new(
        crate::services::receipts::new_receipt_id(),
        now_ms,
        gateway_id,
        subjects.keys(key),
        AccessDecision::Permit,
        200,
    );
    receipt.kind = AccessKind::Network(NetworkAction::Link);
    receipt.site = Some(site.to_owned());
    receipt.resource_type = Some("Patient".to_owned());
    Some(PendingReceipt { receipt, subjects })
}
