//! Simulator of the parts of Meta's Graph API that the connector calls:
//! Pages, lead forms and leads, with Meta's paging, filtering, field
//! selection, errors, usage headers and call budget, plus fault injection.

mod budget;
mod config;
mod data;
mod error;
mod faults;
mod paging;
mod query;
mod stats;
mod store;

pub use config::{
    SimConfig, SimForm, SimPage, DEFAULT_BUDGET_WINDOW, DEFAULT_HISTORY_DAYS,
    GENERATED_FORM_ID_BASE, GENERATED_PAGE_ID_BASE, GENERATED_TOKEN_PREFIX,
};
pub use data::FIRST_LEAD_ID;
pub use faults::{EndpointKind, Fault, FaultAction};
pub use stats::{CallCounts, SimStats};
pub use store::TokenState;
