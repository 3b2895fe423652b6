//! Object store: Pages with their token state, lead forms, and leads kept in
//! ascending creation order per form.
//!
//! Every lead that the simulator creates after start-up goes through
//! [`Store::append_lead`], which also leaves a webhook notification for it.
//! Callers take those with [`Store::take_notifications`] and send them once
//! the store lock is released.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::config::{SimConfig, SimForm};
use super::data::{format_created_time, parse_created_time, FormProfile, LeadGenerator};
use super::paging::SortKey;
use super::webhook::{LeadgenChange, Notification};

/// Seconds between the newest initial lead and start-up.
const HISTORY_END_MARGIN_SECONDS: i64 = 60;
/// Forms are created this many days before their first lead, at most.
const FORM_CREATION_LEAD_DAYS: i64 = 14;

/// State of a Page's access token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenState {
    Valid,
    /// Calls fail with code 190, subcode 463.
    Expired,
    /// Calls that read leads or forms fail with code 200.
    PermissionRevoked,
}

/// Errors of store changes requested by the library API or admin endpoints.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum StoreError {
    #[error("unknown Page id {0}")]
    UnknownPage(String),
    #[error("unknown form id {0}")]
    UnknownForm(String),
    #[error("object id {0} already exists")]
    DuplicateId(String),
    #[error("access token is already used by Page {0}")]
    TokenInUse(String),
    #[error("lead must be a JSON object, got {0}")]
    LeadNotObject(String),
}

#[derive(Debug)]
pub(crate) struct PageRecord {
    pub id: String,
    pub name: String,
    pub access_token: String,
    pub token_state: TokenState,
    /// When the token was marked expired, for the 190/463 message.
    pub token_expired_at: Option<DateTime<Utc>>,
    /// When the token will expire, as `debug_token` reports it; `None`
    /// for a token that never expires, like a long-lived Page token.
    pub token_expires_at: Option<DateTime<Utc>>,
    pub form_ids: Vec<String>,
}

#[derive(Debug)]
pub(crate) struct FormRecord {
    pub id: String,
    pub name: String,
    pub page_id: String,
    pub key: SortKey,
    /// Sorted ascending by key; the API lists them in reverse.
    pub leads: Vec<StoredLead>,
    profile: FormProfile,
}

#[derive(Debug)]
pub(crate) struct StoredLead {
    pub key: SortKey,
    /// Full Graph JSON with every field the lead has.
    pub body: Map<String, Value>,
}

/// An object found by id.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ObjectRef<'a> {
    Page(&'a PageRecord),
    Form(&'a FormRecord),
    Lead(&'a StoredLead),
}

/// All simulated objects.
#[derive(Debug)]
pub(crate) struct Store {
    pages: Vec<PageRecord>,
    forms: HashMap<String, FormRecord>,
    /// Lead id to the form that has it and the lead's sort key.
    lead_index: HashMap<String, (String, SortKey)>,
    generator: LeadGenerator,
    history_days: u32,
    /// Notifications of leads created at run time, not yet taken.
    notifications: Vec<Notification>,
    /// Sequence number of the next lead created at run time.
    next_notification_sequence: u64,
}

impl Store {
    /// Builds every Page and form of `config` with its initial leads, which
    /// end one minute before `now`.
    pub fn new(config: &SimConfig, now: DateTime<Utc>) -> Result<Self, StoreError> {
        let mut store = Self {
            pages: Vec::new(),
            forms: HashMap::new(),
            lead_index: HashMap::new(),
            generator: LeadGenerator::new(config.seed),
            history_days: config.history_days,
            notifications: Vec::new(),
            next_notification_sequence: 0,
        };
        let mut example_pending = true;
        for (index, page) in config.pages.iter().enumerate() {
            if let Some(owner) = store.page_by_token(&page.access_token) {
                return Err(StoreError::TokenInUse(owner.id.clone()));
            }
            store.pages.push(PageRecord {
                id: page.id.clone(),
                name: format!("Example Page {}", index + 1),
                access_token: page.access_token.clone(),
                token_state: TokenState::Valid,
                token_expired_at: None,
                token_expires_at: None,
                form_ids: Vec::new(),
            });
            for form in &page.forms {
                store.create_form(&page.id, form, now, example_pending)?;
                example_pending &= form.initial_leads == 0;
            }
        }
        store.generator.continue_from_clock(now);
        Ok(store)
    }

    pub fn pages(&self) -> &[PageRecord] {
        &self.pages
    }

    pub fn page(&self, page_id: &str) -> Option<&PageRecord> {
        self.pages.iter().find(|page| page.id == page_id)
    }

    fn page_mut(&mut self, page_id: &str) -> Result<&mut PageRecord, StoreError> {
        self.pages
            .iter_mut()
            .find(|page| page.id == page_id)
            .ok_or_else(|| StoreError::UnknownPage(page_id.to_owned()))
    }

    pub fn page_by_token(&self, token: &str) -> Option<&PageRecord> {
        self.pages.iter().find(|page| page.access_token == token)
    }

    pub fn form(&self, form_id: &str) -> Option<&FormRecord> {
        self.forms.get(form_id)
    }

    pub fn forms_of_page(&self, page_id: &str) -> Vec<&FormRecord> {
        let mut forms: Vec<&FormRecord> = self
            .page(page_id)
            .map(|page| {
                page.form_ids
                    .iter()
                    .filter_map(|id| self.forms.get(id))
                    .collect()
            })
            .unwrap_or_default();
        forms.sort_by(|a, b| a.key.cmp(&b.key));
        forms
    }

    pub fn lead(&self, lead_id: &str) -> Option<(&FormRecord, &StoredLead)> {
        let (form_id, key) = self.lead_index.get(lead_id)?;
        let form = self.forms.get(form_id)?;
        let position = form.leads.binary_search_by(|lead| lead.key.cmp(key)).ok()?;
        Some((form, &form.leads[position]))
    }

    /// Finds an object and the Page that owns it.
    pub fn resolve(&self, id: &str) -> Option<(ObjectRef<'_>, &str)> {
        if let Some(page) = self.page(id) {
            return Some((ObjectRef::Page(page), page.id.as_str()));
        }
        if let Some(form) = self.forms.get(id) {
            return Some((ObjectRef::Form(form), form.page_id.as_str()));
        }
        let (form, lead) = self.lead(id)?;
        Some((ObjectRef::Lead(lead), form.page_id.as_str()))
    }

    fn id_in_use(&self, id: &str) -> bool {
        self.page(id).is_some() || self.forms.contains_key(id) || self.lead_index.contains_key(id)
    }

    /// Adds a form to a Page, with its initial leads spread over the
    /// configured history.
    pub fn add_form(
        &mut self,
        page_id: &str,
        form: &SimForm,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.create_form(page_id, form, now, false)
    }

    fn create_form(
        &mut self,
        page_id: &str,
        form: &SimForm,
        now: DateTime<Utc>,
        first_is_example: bool,
    ) -> Result<(), StoreError> {
        if self.id_in_use(&form.id) {
            return Err(StoreError::DuplicateId(form.id.clone()));
        }
        self.page_mut(page_id)?.form_ids.push(form.id.clone());

        let history_end = now.timestamp() - HISTORY_END_MARGIN_SECONDS;
        let span = i64::from(self.history_days) * 86_400;
        let profile = self.generator.form_profile(&form.name);
        let form_lead_days = self.generator.pick_index(FORM_CREATION_LEAD_DAYS as usize) as i64 + 1;
        let created = history_end - span - form_lead_days * 86_400;

        let mut leads = Vec::with_capacity(form.initial_leads);
        let times = self
            .generator
            .history_times(form.initial_leads, history_end, span);
        for (position, time) in times.into_iter().enumerate() {
            let id = self.generator.next_lead_id();
            let body = if first_is_example && position == 0 {
                self.generator
                    .example_lead(&form.id, &profile, id.clone(), time)
            } else {
                self.generator.lead(&form.id, &profile, id.clone(), time)
            };
            let key = SortKey::new(time, id.clone());
            self.lead_index.insert(id, (form.id.clone(), key.clone()));
            leads.push(StoredLead { key, body });
        }
        leads.sort_by(|a, b| a.key.cmp(&b.key));

        self.forms.insert(
            form.id.clone(),
            FormRecord {
                id: form.id.clone(),
                name: form.name.clone(),
                page_id: page_id.to_owned(),
                key: SortKey::new(created, form.id.clone()),
                leads,
                profile,
            },
        );
        Ok(())
    }

    /// Creates `count` generated leads in a form, all created at `now`.
    pub fn add_leads(
        &mut self,
        form_id: &str,
        count: usize,
        now: DateTime<Utc>,
    ) -> Result<Vec<String>, StoreError> {
        let form = self
            .forms
            .get(form_id)
            .ok_or_else(|| StoreError::UnknownForm(form_id.to_owned()))?;
        let profile = form.profile.clone();
        let created = now.timestamp();

        let mut ids = Vec::with_capacity(count);
        for _ in 0..count {
            let id = self.generator.next_lead_id();
            let body = self.generator.lead(form_id, &profile, id.clone(), created);
            self.append_lead(form_id, SortKey::new(created, id.clone()), body)?;
            ids.push(id);
        }
        Ok(ids)
    }

    /// Creates `count` generated leads, each in a form drawn at random.
    /// Returns the (form id, lead id) pairs.
    pub fn add_leads_to_random_forms(
        &mut self,
        count: usize,
        now: DateTime<Utc>,
    ) -> Vec<(String, String)> {
        let mut form_ids: Vec<String> = self
            .pages
            .iter()
            .flat_map(|page| page.form_ids.iter().cloned())
            .collect();
        form_ids.retain(|id| self.forms.contains_key(id));
        let mut created = Vec::with_capacity(count);
        if form_ids.is_empty() {
            return created;
        }
        for _ in 0..count {
            let form_id = form_ids[self.generator.pick_index(form_ids.len())].clone();
            if let Ok(mut ids) = self.add_leads(&form_id, 1, now) {
                created.extend(ids.pop().map(|id| (form_id, id)));
            }
        }
        created
    }

    /// Stores caller-supplied lead JSON as is.
    ///
    /// A lead without a string `id` gets a generated one. A lead whose
    /// `created_time` is missing or unparseable is sorted and filtered as if
    /// created at `now`, while its JSON keeps the value it came with.
    ///
    /// Like generated leads, the lead gets a webhook notification. It names
    /// the form and Page the lead is stored in, its sort time as
    /// `created_time`, and the JSON's `ad_id` when that is a string or
    /// number. The JSON's own `form_id` is ignored.
    pub fn insert_lead(
        &mut self,
        form_id: &str,
        lead: Value,
        now: DateTime<Utc>,
    ) -> Result<String, StoreError> {
        if !self.forms.contains_key(form_id) {
            return Err(StoreError::UnknownForm(form_id.to_owned()));
        }
        let Value::Object(mut body) = lead else {
            return Err(StoreError::LeadNotObject(lead.to_string()));
        };

        let id = match body.get("id") {
            Some(Value::String(id)) => id.clone(),
            Some(Value::Number(number)) => number.to_string(),
            _ => {
                let id = self.generator.next_lead_id();
                body.insert("id".into(), json!(id));
                id
            }
        };
        if self.id_in_use(&id) {
            return Err(StoreError::DuplicateId(id));
        }
        let created = body
            .get("created_time")
            .and_then(Value::as_str)
            .and_then(parse_created_time)
            .unwrap_or_else(|| now.timestamp());

        self.append_lead(form_id, SortKey::new(created, id.clone()), body)?;
        Ok(id)
    }

    /// Inserts a lead created after start-up into its form and leaves a
    /// webhook notification for it. Leads of the initial history do not
    /// pass through here, so they send no webhooks.
    fn append_lead(
        &mut self,
        form_id: &str,
        key: SortKey,
        body: Map<String, Value>,
    ) -> Result<(), StoreError> {
        let form = self
            .forms
            .get_mut(form_id)
            .ok_or_else(|| StoreError::UnknownForm(form_id.to_owned()))?;
        let position = form.leads.partition_point(|lead| lead.key < key);
        let id = key.id.clone();
        let ad_id = match body.get("ad_id") {
            Some(Value::String(ad_id)) => Some(ad_id.clone()),
            Some(Value::Number(ad_id)) => Some(ad_id.to_string()),
            _ => None,
        };
        let change = LeadgenChange::new(
            id.clone(),
            form.page_id.clone(),
            form_id.to_owned(),
            ad_id,
            key.created,
        );
        form.leads.insert(
            position,
            StoredLead {
                key: key.clone(),
                body,
            },
        );
        self.lead_index.insert(id, (form_id.to_owned(), key));
        self.notifications.push(Notification {
            sequence: self.next_notification_sequence,
            change,
        });
        self.next_notification_sequence += 1;
        Ok(())
    }

    /// Takes the notifications of leads created since the last call, in
    /// creation order.
    pub fn take_notifications(&mut self) -> Vec<Notification> {
        std::mem::take(&mut self.notifications)
    }

    /// Removes a lead; returns whether it existed.
    pub fn delete_lead(&mut self, lead_id: &str) -> bool {
        let Some((form_id, key)) = self.lead_index.remove(lead_id) else {
            return false;
        };
        let Some(form) = self.forms.get_mut(&form_id) else {
            return false;
        };
        match form.leads.binary_search_by(|lead| lead.key.cmp(&key)) {
            Ok(position) => {
                form.leads.remove(position);
                true
            }
            Err(_) => false,
        }
    }

    /// Returns the full JSON of a form's leads, newest first.
    pub fn leads_json(&self, form_id: &str) -> Result<Vec<Value>, StoreError> {
        let form = self
            .forms
            .get(form_id)
            .ok_or_else(|| StoreError::UnknownForm(form_id.to_owned()))?;
        Ok(form
            .leads
            .iter()
            .rev()
            .map(|lead| Value::Object(lead.body.clone()))
            .collect())
    }

    /// Returns a form's lead ids, newest first.
    pub fn lead_ids(&self, form_id: &str) -> Result<Vec<String>, StoreError> {
        let form = self
            .forms
            .get(form_id)
            .ok_or_else(|| StoreError::UnknownForm(form_id.to_owned()))?;
        Ok(form
            .leads
            .iter()
            .rev()
            .map(|lead| lead.key.id.clone())
            .collect())
    }

    pub fn set_token_state(
        &mut self,
        page_id: &str,
        state: TokenState,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let page = self.page_mut(page_id)?;
        page.token_state = state;
        page.token_expired_at = (state == TokenState::Expired).then_some(now);
        Ok(())
    }

    /// Sets when a Page's token will expire, for `debug_token`.
    pub fn set_token_expiry(
        &mut self,
        page_id: &str,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError> {
        self.page_mut(page_id)?.token_expires_at = expires_at;
        Ok(())
    }

    /// Replaces a Page's token; the old one becomes unknown and the new one
    /// starts out valid.
    pub fn set_access_token(&mut self, page_id: &str, token: &str) -> Result<(), StoreError> {
        if let Some(owner) = self.page_by_token(token) {
            if owner.id != page_id {
                return Err(StoreError::TokenInUse(owner.id.clone()));
            }
        }
        let page = self.page_mut(page_id)?;
        page.access_token = token.to_owned();
        page.token_state = TokenState::Valid;
        page.token_expired_at = None;
        Ok(())
    }
}

impl FormRecord {
    /// Returns the form's Graph JSON with every field.
    pub fn to_json(&self, page_name: &str) -> Map<String, Value> {
        let mut form = Map::new();
        form.insert("id".into(), json!(self.id));
        form.insert("name".into(), json!(self.name));
        form.insert("status".into(), json!("ACTIVE"));
        form.insert("leads_count".into(), json!(self.leads.len()));
        form.insert(
            "created_time".into(),
            json!(format_created_time(self.key.created)),
        );
        form.insert("locale".into(), json!("en_US"));
        form.insert(
            "page".into(),
            json!({"id": self.page_id, "name": page_name}),
        );
        form
    }
}

impl PageRecord {
    /// Returns the Page's Graph JSON with every field.
    pub fn to_json(&self) -> Map<String, Value> {
        let mut page = Map::new();
        page.insert("id".into(), json!(self.id));
        page.insert("name".into(), json!(self.name));
        page
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (Store, DateTime<Utc>) {
        let now = DateTime::parse_from_rfc3339("2024-05-01T12:00:00Z")
            .expect("valid time")
            .with_timezone(&Utc);
        let config = SimConfig::generated(1, 2, 2, 50);
        (Store::new(&config, now).expect("valid config"), now)
    }

    #[test]
    fn first_lead_of_first_form_is_example() {
        let (store, _) = store();
        let leads = store.leads_json("200000001000001").expect("form exists");
        let oldest = leads.last().expect("form has leads");
        assert_eq!(oldest["field_data"][1]["values"][0], "Joe Example");
        let other = store.leads_json("200000001000002").expect("form exists");
        assert_ne!(
            other.last().expect("leads")["field_data"][1]["values"][0],
            "Joe Example"
        );
    }

    #[test]
    fn initial_leads_end_before_now() {
        let (store, now) = store();
        let form = store.form("200000002000002").expect("form exists");
        let newest = form.leads.last().expect("form has leads");
        assert!(newest.key.created <= now.timestamp() - HISTORY_END_MARGIN_SECONDS);
        assert!(form.key.created < form.leads[0].key.created);
    }

    #[test]
    fn added_leads_share_created_second() {
        let (mut store, now) = store();
        let ids = store
            .add_leads("200000001000001", 3, now)
            .expect("form exists");
        let newest = store.lead_ids("200000001000001").expect("form exists");
        assert_eq!(
            newest[..3],
            [ids[2].clone(), ids[1].clone(), ids[0].clone()]
        );
        for id in &ids {
            let (_, lead) = store.lead(id).expect("lead stored");
            assert_eq!(lead.key.created, now.timestamp());
        }
    }

    #[test]
    fn run_time_leads_leave_notifications() {
        let (mut store, now) = store();
        assert!(store.take_notifications().is_empty(), "initial leads");

        let ids = store
            .add_leads("200000002000001", 2, now)
            .expect("form exists");
        let raw = store
            .insert_lead("200000001000001", json!({"ad_id": "77"}), now)
            .expect("form exists");
        let notifications = store.take_notifications();
        let sequences: Vec<u64> = notifications.iter().map(|n| n.sequence).collect();
        assert_eq!(sequences, [0, 1, 2]);
        assert_eq!(notifications[0].change.leadgen_id, ids[0]);
        assert_eq!(notifications[1].change.page_id, "100000000000002");
        assert_eq!(notifications[1].change.form_id, "200000002000001");
        assert_eq!(notifications[1].change.created_time, now.timestamp());
        assert_eq!(notifications[2].change.leadgen_id, raw);
        assert_eq!(notifications[2].change.ad_id.as_deref(), Some("77"));
        assert!(store.take_notifications().is_empty(), "already taken");

        store
            .add_leads("200000001000001", 1, now)
            .expect("form exists");
        assert_eq!(store.take_notifications()[0].sequence, 3);
    }

    #[test]
    fn deleted_lead_is_gone() {
        let (mut store, _) = store();
        let id = store.lead_ids("200000001000001").expect("form exists")[5].clone();
        assert!(store.delete_lead(&id));
        assert!(store.lead(&id).is_none());
        assert!(store.resolve(&id).is_none());
        assert!(!store.delete_lead(&id));
        assert_eq!(store.lead_ids("200000001000001").expect("form").len(), 49);
    }

    #[test]
    fn insert_lead_keeps_raw_json() {
        let (mut store, now) = store();
        let id = store
            .insert_lead(
                "200000001000001",
                json!({"created_time": "yesterday", "field_data": []}),
                now,
            )
            .expect("form exists");
        let (_, lead) = store.lead(&id).expect("lead stored");
        assert_eq!(lead.body["created_time"], "yesterday");
        assert_eq!(lead.key.created, now.timestamp());

        let duplicate = store.insert_lead("200000001000001", json!({"id": id}), now);
        assert!(matches!(duplicate, Err(StoreError::DuplicateId(_))));
        let not_object = store.insert_lead("200000001000001", json!([1]), now);
        assert!(matches!(not_object, Err(StoreError::LeadNotObject(_))));
    }

    #[test]
    fn resolve_reports_owner_page() {
        let (store, _) = store();
        let lead_id = store.lead_ids("200000002000001").expect("form")[0].clone();
        let (object, owner) = store.resolve(&lead_id).expect("lead exists");
        assert!(matches!(object, ObjectRef::Lead(_)));
        assert_eq!(owner, "100000000000002");
        let (object, owner) = store.resolve("200000001000002").expect("form exists");
        assert!(matches!(object, ObjectRef::Form(_)));
        assert_eq!(owner, "100000000000001");
    }

    #[test]
    fn token_replacement_invalidates_old_token() {
        let (mut store, _) = store();
        store
            .set_access_token("100000000000001", "new-token")
            .expect("page exists");
        assert!(store.page_by_token("EAASIM100000000000001").is_none());
        assert_eq!(
            store.page_by_token("new-token").map(|p| p.id.as_str()),
            Some("100000000000001")
        );
        let clash = store.set_access_token("100000000000002", "new-token");
        assert!(matches!(clash, Err(StoreError::TokenInUse(_))));
    }

    #[test]
    fn add_form_rejects_duplicate_id() {
        let (mut store, now) = store();
        let form = SimForm {
            id: "200000001000001".into(),
            name: "Copy".into(),
            initial_leads: 0,
        };
        let result = store.add_form("100000000000001", &form, now);
        assert!(matches!(result, Err(StoreError::DuplicateId(_))));
    }
}
