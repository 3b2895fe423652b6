//! The forms and Pages this instance owns, with the live offset of each
//! form and the token health of each Page.
//!
//! Each form's [`FormState`] sits behind its own async lock. Whoever writes
//! leads of a form holds that lock from the deduplication decision until
//! the transaction has committed, so the decision and the write are atomic
//! and work for one form is serialised across the backfill and webhook
//! paths.
//!
//! Ownership is a set that can change at run time ([`Forms::insert`] is
//! used by form discovery). Notifications are keyed by form id, so the
//! notifications topic's partitions split forms between instances of one
//! consumer group.
//! NOTE: one instance owns every configured form today. Sharing forms
//! between instances also needs the owned set to follow partition
//! assignment (load a form's offset on assign, drop it on revoke) and the
//! backfill to read only owned forms; the per-form state and the
//! transactions with consumer group metadata already fit that mode.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use tokio::sync::Mutex;

use crate::config::PageConfig;
use crate::graph::{ErrorClass, GraphError, PageAuth};
use crate::offsets::FormState;

/// One owned form.
#[derive(Debug)]
pub struct FormHandle {
    pub form_id: String,
    pub page_id: String,
    pub state: Mutex<FormState>,
}

/// Health of a Page token: working, or the reason calls are stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PageHealth {
    Healthy,
    /// The access token is expired or invalid (Graph codes 102, 190).
    TokenInvalid {
        detail: String,
    },
    /// The token lacks a permission (Graph codes 10, 200-299).
    PermissionMissing {
        detail: String,
    },
}

impl PageHealth {
    pub fn as_str(&self) -> &'static str {
        match self {
            PageHealth::Healthy => "healthy",
            PageHealth::TokenInvalid { .. } => "token_invalid",
            PageHealth::PermissionMissing { .. } => "permission_missing",
        }
    }
}

#[derive(Debug)]
struct PageEntry {
    auth: PageAuth,
    health: PageHealth,
}

/// Pages with their credentials and health.
#[derive(Debug, Default)]
pub struct Pages {
    entries: RwLock<BTreeMap<String, PageEntry>>,
}

impl Pages {
    pub fn new(pages: &[PageConfig]) -> Self {
        let entries = pages
            .iter()
            .map(|page| {
                let entry = PageEntry {
                    auth: PageAuth {
                        page_id: page.id.clone(),
                        access_token: page.access_token.clone(),
                    },
                    health: PageHealth::Healthy,
                };
                (page.id.clone(), entry)
            })
            .collect();
        Self {
            entries: RwLock::new(entries),
        }
    }

    /// Credentials of a healthy Page; `Err` carries the health of a Page
    /// whose calls are stopped.
    pub fn auth(&self, page_id: &str) -> Result<PageAuth, PageHealth> {
        let entries = self.entries.read().expect("pages lock is never poisoned");
        match entries.get(page_id) {
            Some(entry) if entry.health == PageHealth::Healthy => Ok(entry.auth.clone()),
            Some(entry) => Err(entry.health.clone()),
            None => Err(PageHealth::TokenInvalid {
                detail: format!("Page `{page_id}` has no configured access token"),
            }),
        }
    }

    /// Credentials of every Page, healthy or not.
    pub fn all_auth(&self) -> Vec<PageAuth> {
        let entries = self.entries.read().expect("pages lock is never poisoned");
        entries.values().map(|entry| entry.auth.clone()).collect()
    }

    /// Marks a Page unhealthy when `error` is a token or permission failure.
    /// Returns true when the Page's health changed.
    pub fn report(&self, page_id: &str, error: &GraphError) -> bool {
        let health = match error.class() {
            ErrorClass::Token => PageHealth::TokenInvalid {
                detail: error.to_string(),
            },
            ErrorClass::Permission => PageHealth::PermissionMissing {
                detail: error.to_string(),
            },
            _ => return false,
        };
        let mut entries = self.entries.write().expect("pages lock is never poisoned");
        match entries.get_mut(page_id) {
            Some(entry) if entry.health != health => {
                entry.health = health;
                true
            }
            _ => false,
        }
    }

    /// Replaces the credentials from a new config; a Page whose token
    /// changed becomes healthy again.
    pub fn reload(&self, pages: &[PageConfig]) {
        let mut entries = self.entries.write().expect("pages lock is never poisoned");
        for page in pages {
            let entry = entries.entry(page.id.clone()).or_insert_with(|| PageEntry {
                auth: PageAuth {
                    page_id: page.id.clone(),
                    access_token: page.access_token.clone(),
                },
                health: PageHealth::Healthy,
            });
            if entry.auth.access_token != page.access_token {
                entry.auth.access_token = page.access_token.clone();
                entry.health = PageHealth::Healthy;
            }
        }
    }

    /// Health of every Page, by Page id.
    pub fn health(&self) -> BTreeMap<String, PageHealth> {
        let entries = self.entries.read().expect("pages lock is never poisoned");
        entries
            .iter()
            .map(|(id, entry)| (id.clone(), entry.health.clone()))
            .collect()
    }
}

/// The forms this instance owns, by form id.
#[derive(Debug, Default)]
pub struct Forms {
    forms: RwLock<HashMap<String, Arc<FormHandle>>>,
}

impl Forms {
    pub fn insert(&self, form: FormHandle) -> Arc<FormHandle> {
        let handle = Arc::new(form);
        let mut forms = self.forms.write().expect("forms lock is never poisoned");
        forms.insert(handle.form_id.clone(), handle.clone());
        handle
    }

    pub fn get(&self, form_id: &str) -> Option<Arc<FormHandle>> {
        let forms = self.forms.read().expect("forms lock is never poisoned");
        forms.get(form_id).cloned()
    }

    pub fn contains(&self, form_id: &str) -> bool {
        self.get(form_id).is_some()
    }

    pub fn all(&self) -> Vec<Arc<FormHandle>> {
        let forms = self.forms.read().expect("forms lock is never poisoned");
        let mut all: Vec<_> = forms.values().cloned().collect();
        all.sort_by(|left, right| left.form_id.cmp(&right.form_id));
        all
    }
}
