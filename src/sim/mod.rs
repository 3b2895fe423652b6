//! Simulator of the parts of Meta's Graph API that the connector calls:
//! Pages, lead forms and leads, with Meta's paging, filtering, field
//! selection, errors, usage headers and call budget, plus fault injection.

mod error;
mod paging;
mod query;
