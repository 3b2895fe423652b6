//! Simulator of the parts of Meta's Graph API that the connector calls:
//! Pages, lead forms and leads, with Meta's paging, filtering, field
//! selection, errors, usage headers and call budget, plus fault injection.

mod budget;
mod error;
mod faults;
mod paging;
mod query;
mod stats;

pub use faults::{EndpointKind, Fault, FaultAction};
pub use stats::{CallCounts, SimStats};
