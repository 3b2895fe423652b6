//! Deterministic lead data: lead ids, creation times of the initial history,
//! ads of each form, and `field_data` values drawn from a seeded RNG.
//!
//! For a given seed the same calls produce the same leads. Creation times are
//! offsets from the start-up time, so their absolute values differ per run.
//! `StdRng` output is fixed for the `rand` version in `Cargo.lock`, not across
//! `rand` upgrades.

use chrono::{DateTime, TimeZone, Utc};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Map, Value};

/// First lead id. Lead ids are above 2^53, where JSON numbers parsed as
/// doubles lose precision, so a client that does not keep them as strings
/// gets wrong ids.
pub const FIRST_LEAD_ID: u64 = 9_007_199_254_740_993;

/// Distance between the first history id and the first run-time id, so a
/// history of up to 100 million leads never reaches run-time ids.
const RUNTIME_ID_OFFSET: u64 = 4_000_000_000;

/// Graph API timestamp format: `2015-02-28T08:49:14+0000`.
const CREATED_TIME_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%z";

/// Share of leads without an ad (organic leads).
const ORGANIC_SHARE: f64 = 0.10;
/// Share of leads submitted on Instagram rather than Facebook.
const INSTAGRAM_SHARE: f64 = 0.30;
/// Share of leads, in forms with disclaimers, that carry
/// `custom_disclaimer_responses`.
const DISCLAIMER_SHARE: f64 = 0.40;
/// Share of leads that carry `partner_name`.
const PARTNER_SHARE: f64 = 0.05;
/// Share of optional questions answered with `values: []`.
const EMPTY_ANSWER_SHARE: f64 = 0.20;
/// Chance that a lead of the initial history shares its second with the
/// previous lead.
const SAME_SECOND_SHARE: f64 = 0.12;

/// Formats Unix seconds as a Graph API timestamp.
pub(crate) fn format_created_time(seconds: i64) -> String {
    Utc.timestamp_opt(seconds, 0)
        .single()
        .unwrap_or(DateTime::UNIX_EPOCH)
        .format(CREATED_TIME_FORMAT)
        .to_string()
}

/// Parses a Graph API timestamp, or RFC 3339, into Unix seconds.
pub(crate) fn parse_created_time(text: &str) -> Option<i64> {
    DateTime::parse_from_str(text, CREATED_TIME_FORMAT)
        .or_else(|_| DateTime::parse_from_rfc3339(text))
        .ok()
        .map(|time| time.timestamp())
}

/// An ad that leads of a form can come from.
#[derive(Debug, Clone)]
pub(crate) struct Ad {
    pub ad_id: String,
    pub ad_name: String,
    pub adset_id: String,
    pub adset_name: String,
    pub campaign_id: String,
    pub campaign_name: String,
}

/// Generation settings of one form: its questions and ads.
#[derive(Debug, Clone)]
pub(crate) struct FormProfile {
    template: &'static Template,
    ads: Vec<Ad>,
}

#[derive(Debug)]
enum Answer {
    FullName,
    FirstName,
    LastName,
    Email,
    Phone,
    City,
    ZipCode,
    Choice(&'static [&'static str]),
    MultiChoice(&'static [&'static str]),
}

#[derive(Debug)]
struct Question {
    name: &'static str,
    answer: Answer,
    optional: bool,
}

#[derive(Debug)]
struct Template {
    questions: &'static [Question],
    has_disclaimers: bool,
}

const fn question(name: &'static str, answer: Answer) -> Question {
    Question {
        name,
        answer,
        optional: false,
    }
}

const fn optional(name: &'static str, answer: Answer) -> Question {
    Question {
        name,
        answer,
        optional: true,
    }
}

const WEEKDAYS: &[&str] = &["monday", "tuesday", "wednesday", "thursday", "friday"];

const FREE_TEXT: &[&str] = &[
    "Please call after 5pm 📞",
    "Bitte nur per E-Mail kontaktieren.",
    "我想了解更多信息",
    "Line one\nline two",
    "  leading and trailing spaces  ",
    "\"Quoted\", with commas; and a semicolon",
    "👍",
    "N/A",
];

/// Form templates, used in turn as forms are created. The first matches the
/// example lead of Meta's Lead Ads retrieval guide.
const TEMPLATES: &[Template] = &[
    Template {
        questions: &[
            question(
                "car_make",
                Answer::Choice(&["Honda", "Toyota", "Ford", "Škoda", "Volkswagen", "Kia"]),
            ),
            question("full_name", Answer::FullName),
            question("email", Answer::Email),
            question("phone_number", Answer::Phone),
            question(
                "selected_dealer",
                Answer::Choice(&["99213450", "99213451", "99213452"]),
            ),
            optional(
                "which_model_are_you_interested_in?",
                Answer::Choice(&["civic", "cr-v", "corolla", "octavia", "not_sure_yet"]),
            ),
        ],
        has_disclaimers: true,
    },
    Template {
        questions: &[
            question("first_name", Answer::FirstName),
            question("last_name", Answer::LastName),
            question("email", Answer::Email),
            question(
                "company_name",
                Answer::Choice(&[
                    "Example GmbH",
                    "Acme Ltd.",
                    "株式会社エグザンプル",
                    "Café Zoë",
                    "Example & Sons",
                ]),
            ),
            optional(
                "job_title",
                Answer::Choice(&[
                    "Head of Marketing",
                    "CTO",
                    "Geschäftsführerin",
                    "エンジニア",
                ]),
            ),
            optional("preferred_days", Answer::MultiChoice(WEEKDAYS)),
            optional("comments", Answer::Choice(FREE_TEXT)),
        ],
        has_disclaimers: true,
    },
    Template {
        questions: &[
            question("full_name", Answer::FullName),
            question("email", Answer::Email),
            question("phone_number", Answer::Phone),
            question("city", Answer::City),
            question("zip_code", Answer::ZipCode),
            question(
                "when_do_you_plan_to_move?",
                Answer::Choice(&[
                    "within_1_month",
                    "1-3_months",
                    "3-6_months",
                    "just_browsing",
                ]),
            ),
            optional(
                "what_is_your_budget_(usd)?",
                Answer::Choice(&["250000", "400,000", "$1.2M", "flexible"]),
            ),
        ],
        has_disclaimers: false,
    },
    Template {
        questions: &[
            question("full_name", Answer::FullName),
            question("email", Answer::Email),
            question("phone_number", Answer::Phone),
            question("zip_code", Answer::ZipCode),
            question(
                "are_you_a_current_customer?",
                Answer::Choice(&["yes", "no"]),
            ),
            optional("preferred_days", Answer::MultiChoice(WEEKDAYS)),
        ],
        has_disclaimers: false,
    },
];

struct Person {
    full_name: &'static str,
    first_name: &'static str,
    last_name: &'static str,
    email: &'static str,
}

const fn person(
    full_name: &'static str,
    first_name: &'static str,
    last_name: &'static str,
    email: &'static str,
) -> Person {
    Person {
        full_name,
        first_name,
        last_name,
        email,
    }
}

const PEOPLE: &[Person] = &[
    person("Zoë Ünal 😀", "Zoë", "Ünal", "zoe.unal@example.com"),
    person("李小龙", "小龙", "李", "xiaolong.li@example.com"),
    person("田中 花子", "花子", "田中", "hanako.tanaka@example.net"),
    person("김민준", "민준", "김", "minjun.kim@example.org"),
    person("Nguyễn Văn An", "An", "Nguyễn", "an.nguyen@example.com"),
    person(
        "Søren Østergaard",
        "Søren",
        "Østergaard",
        "soren@example.org",
    ),
    person(
        "Chloé Lefèvre",
        "Chloé",
        "Lefèvre",
        "chloe.lefevre@example.com",
    ),
    person(
        "Łukasz Wiśniewski",
        "Łukasz",
        "Wiśniewski",
        "lukasz.w@example.net",
    ),
    person(
        "Алексей Иванов",
        "Алексей",
        "Иванов",
        "aleksei.ivanov@example.com",
    ),
    person("محمد علي", "محمد", "علي", "m.ali@example.org"),
    person(
        "Emily O'Brien",
        "Emily",
        "O'Brien",
        "Emily.OBrien@Example.com",
    ),
    person(
        "Dr. Hans-Peter Müller",
        "Hans-Peter",
        "Müller",
        "hp.mueller@example.net",
    ),
    person("Jane Doe", "Jane", "Doe", "jane.doe@example.com"),
    person(
        "John Smith",
        "John",
        "Smith",
        "john.smith+leads@example.com",
    ),
    person(
        "Priya Raghunathan",
        "Priya",
        "Raghunathan",
        "priya.r@example.org",
    ),
    person(
        "Oluwaseun Adeyemi",
        "Oluwaseun",
        "Adeyemi",
        "seun.adeyemi@example.com",
    ),
    person(
        "María José García-López",
        "María José",
        "García-López",
        "mj.garcia@example.net",
    ),
    person("Ana 🌸 Costa", "Ana", "Costa", "ana.costa@example.com"),
];

const CITIES: &[&str] = &[
    "Berlin",
    "São Paulo",
    "Zürich",
    "東京",
    "New York",
    "Kraków",
    "Reykjavík",
];
const ZIP_CODES: &[&str] = &[
    "10115",
    "01310-100",
    "8001",
    "100-0001",
    "10001",
    "30-001",
    "SW1A 1AA",
];
const AD_NAMES: &[&str] = &[
    "Carousel A",
    "Video 15s",
    "Single image – Frühling 🌷",
    "Story ad",
];

/// Seeded source of lead ids and lead contents.
#[derive(Debug)]
pub(crate) struct LeadGenerator {
    rng: StdRng,
    next_lead_id: u64,
    forms_created: usize,
}

impl LeadGenerator {
    pub fn new(seed: u64) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
            next_lead_id: FIRST_LEAD_ID,
            forms_created: 0,
        }
    }

    /// Moves the next id past every id a simulator started earlier can have
    /// given out, so leads created at run time never reuse the id of a lead
    /// from an earlier run against the same Kafka topics. The history keeps
    /// its seeded ids. The base grows by 100 ids per millisecond of wall
    /// clock since 2023-11-14, far more than a run creates.
    pub fn continue_from_clock(&mut self, now: DateTime<Utc>) {
        const CLOCK_EPOCH_MILLIS: i64 = 1_700_000_000_000;
        let elapsed = u64::try_from(now.timestamp_millis() - CLOCK_EPOCH_MILLIS).unwrap_or(0);
        let base = FIRST_LEAD_ID + RUNTIME_ID_OFFSET + elapsed.saturating_mul(100);
        self.next_lead_id = self.next_lead_id.max(base);
    }

    /// Returns a fresh lead id; ids grow by a random step.
    pub fn next_lead_id(&mut self) -> String {
        let id = self.next_lead_id;
        self.next_lead_id += self.rng.gen_range(1..=40);
        id.to_string()
    }

    /// Draws a number in `0..upper` (0 when `upper` is 0).
    pub fn pick_index(&mut self, upper: usize) -> usize {
        if upper == 0 {
            0
        } else {
            self.rng.gen_range(0..upper)
        }
    }

    /// Creates the profile of a new form: the next template in turn and
    /// three ads in one campaign.
    pub fn form_profile(&mut self, form_name: &str) -> FormProfile {
        let template = &TEMPLATES[self.forms_created % TEMPLATES.len()];
        self.forms_created += 1;

        let campaign =
            120_210_000_000_000_000u64 + self.rng.gen_range(0..1_000_000_000_000u64) * 100;
        let campaign_name = format!("{form_name} – campaign");
        let ads = (0..3u64)
            .map(|index| {
                let adset_index = index / 2;
                Ad {
                    ad_id: (campaign + 10 + index).to_string(),
                    ad_name: AD_NAMES[self.rng.gen_range(0..AD_NAMES.len())].to_owned(),
                    adset_id: (campaign + 1 + adset_index).to_string(),
                    adset_name: format!("Ad set {}", adset_index + 1),
                    campaign_id: campaign.to_string(),
                    campaign_name: campaign_name.clone(),
                }
            })
            .collect();
        FormProfile { template, ads }
    }

    /// Spreads `count` creation times, ascending, over `span_seconds` ending
    /// at `end`. About one lead in eight shares the second of the one before.
    pub fn history_times(&mut self, count: usize, end: i64, span_seconds: i64) -> Vec<i64> {
        let gaps: Vec<f64> = (0..count)
            .map(|index| {
                if index > 0 && self.rng.gen_bool(SAME_SECOND_SHARE) {
                    0.0
                } else {
                    self.rng.gen_range(0.2..1.8)
                }
            })
            .collect();
        let total: f64 = gaps.iter().sum();
        let scale = if total > 0.0 {
            span_seconds.max(0) as f64 / total
        } else {
            0.0
        };

        let start = end - span_seconds.max(0);
        let mut elapsed = 0.0;
        gaps.iter()
            .map(|gap| {
                elapsed += gap;
                // The last lead lands exactly on `end` up to rounding.
                (start + (elapsed * scale).floor() as i64).min(end)
            })
            .collect()
    }

    /// Generates the full Graph JSON of a lead.
    pub fn lead(
        &mut self,
        form_id: &str,
        profile: &FormProfile,
        id: String,
        created: i64,
    ) -> Map<String, Value> {
        let is_organic = self.rng.gen_bool(ORGANIC_SHARE);
        let platform = if self.rng.gen_bool(INSTAGRAM_SHARE) {
            "ig"
        } else {
            "fb"
        };
        let person = &PEOPLE[self.rng.gen_range(0..PEOPLE.len())];

        let field_data: Vec<Value> = profile
            .template
            .questions
            .iter()
            .map(|question| {
                let values = self.answer(question, person);
                json!({ "name": question.name, "values": values })
            })
            .collect();

        let mut lead = Map::new();
        lead.insert("id".into(), json!(id));
        lead.insert("created_time".into(), json!(format_created_time(created)));
        lead.insert("form_id".into(), json!(form_id));
        lead.insert("field_data".into(), Value::Array(field_data));
        lead.insert("is_organic".into(), json!(is_organic));
        lead.insert("platform".into(), json!(platform));

        if !is_organic {
            let ad = &profile.ads[self.rng.gen_range(0..profile.ads.len())];
            insert_ad(&mut lead, ad);
        }
        if profile.template.has_disclaimers && self.rng.gen_bool(DISCLAIMER_SHARE) {
            let mut responses = vec![json!({
                "checkbox_key": "optional_1",
                "is_checked": if self.rng.gen_bool(0.7) { "1" } else { "" },
            })];
            if self.rng.gen_bool(0.3) {
                responses.push(json!({
                    "checkbox_key": "optional_2",
                    "is_checked": if self.rng.gen_bool(0.5) { "1" } else { "" },
                }));
            }
            lead.insert(
                "custom_disclaimer_responses".into(),
                Value::Array(responses),
            );
        }
        if self.rng.gen_bool(PARTNER_SHARE) {
            lead.insert("partner_name".into(), json!("Example Lead Partner"));
        }
        lead
    }

    /// Generates the example lead of Meta's Lead Ads retrieval guide, with
    /// the given id and creation time and the form's first ad.
    pub fn example_lead(
        &mut self,
        form_id: &str,
        profile: &FormProfile,
        id: String,
        created: i64,
    ) -> Map<String, Value> {
        let mut lead = Map::new();
        lead.insert("id".into(), json!(id));
        lead.insert("created_time".into(), json!(format_created_time(created)));
        lead.insert("form_id".into(), json!(form_id));
        lead.insert(
            "field_data".into(),
            json!([
                {"name": "car_make", "values": ["Honda"]},
                {"name": "full_name", "values": ["Joe Example"]},
                {"name": "email", "values": ["joe@example.com"]},
                {"name": "selected_dealer", "values": ["99213450"]},
            ]),
        );
        lead.insert("is_organic".into(), json!(false));
        lead.insert("platform".into(), json!("fb"));
        lead.insert(
            "custom_disclaimer_responses".into(),
            json!([{"checkbox_key": "optional_1", "is_checked": "1"}]),
        );
        insert_ad(&mut lead, &profile.ads[0]);
        lead
    }

    fn answer(&mut self, question: &Question, person: &Person) -> Vec<String> {
        if question.optional && self.rng.gen_bool(EMPTY_ANSWER_SHARE) {
            return Vec::new();
        }
        let single = match &question.answer {
            Answer::FullName => person.full_name.to_owned(),
            Answer::FirstName => person.first_name.to_owned(),
            Answer::LastName => person.last_name.to_owned(),
            Answer::Email => person.email.to_owned(),
            Answer::Phone => self.phone_number(),
            Answer::City => self.choose(CITIES),
            Answer::ZipCode => self.choose(ZIP_CODES),
            Answer::Choice(options) => self.choose(options),
            Answer::MultiChoice(options) => {
                let count = self.rng.gen_range(1..=3.min(options.len()));
                // Keep the options' own order, as a checkbox list does.
                let mut picked: Vec<usize> = (0..options.len()).collect();
                picked.shuffle(&mut self.rng);
                picked.truncate(count);
                picked.sort_unstable();
                return picked.iter().map(|&i| options[i].to_owned()).collect();
            }
        };
        vec![single]
    }

    fn choose(&mut self, options: &[&str]) -> String {
        options[self.rng.gen_range(0..options.len())].to_owned()
    }

    /// Draws a phone number from the ranges reserved for fiction: 555-01xx
    /// in North America and 020 7946 0xxx in London.
    fn phone_number(&mut self) -> String {
        match self.rng.gen_range(0..3) {
            0 => format!("+1555555{:04}", 100 + self.rng.gen_range(0..100)),
            1 => format!("(555) 555-{:04}", 100 + self.rng.gen_range(0..100)),
            _ => format!("+44 20 7946 0{:03}", self.rng.gen_range(0..1000)),
        }
    }
}

fn insert_ad(lead: &mut Map<String, Value>, ad: &Ad) {
    lead.insert("ad_id".into(), json!(ad.ad_id));
    lead.insert("ad_name".into(), json!(ad.ad_name));
    lead.insert("adset_id".into(), json!(ad.adset_id));
    lead.insert("adset_name".into(), json!(ad.adset_name));
    lead.insert("campaign_id".into(), json!(ad.campaign_id));
    lead.insert("campaign_name".into(), json!(ad.campaign_name));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_time_has_no_colon_in_offset() {
        assert_eq!(
            format_created_time(1_425_113_354),
            "2015-02-28T08:49:14+0000"
        );
        assert_eq!(
            parse_created_time("2015-02-28T08:49:14+0000"),
            Some(1_425_113_354)
        );
        assert_eq!(
            parse_created_time("2015-02-28T08:49:14Z"),
            Some(1_425_113_354)
        );
        assert_eq!(parse_created_time("28/02/2015 08:49"), None);
    }

    #[test]
    fn lead_ids_exceed_double_precision() {
        let mut generator = LeadGenerator::new(1);
        let first: u64 = generator.next_lead_id().parse().expect("numeric id");
        let second: u64 = generator.next_lead_id().parse().expect("numeric id");
        assert_eq!(first, FIRST_LEAD_ID);
        assert!(first > 1 << 53);
        assert!(second > first);
    }

    #[test]
    fn same_seed_gives_same_leads() {
        let make = || {
            let mut generator = LeadGenerator::new(5);
            let profile = generator.form_profile("Form");
            (0..20)
                .map(|_| {
                    let id = generator.next_lead_id();
                    generator.lead("f", &profile, id, 1_700_000_000)
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(make(), make());
    }

    #[test]
    fn history_times_are_ascending_within_span() {
        let mut generator = LeadGenerator::new(3);
        let end = 1_714_557_600;
        let span = 30 * 86_400;
        let times = generator.history_times(500, end, span);
        assert_eq!(times.len(), 500);
        assert!(times.windows(2).all(|pair| pair[0] <= pair[1]));
        assert!(times[0] > end - span);
        assert!(times[499] <= end);
        let shared = times.windows(2).filter(|pair| pair[0] == pair[1]).count();
        assert!(shared >= 20, "only {shared} leads share a second");
    }

    #[test]
    fn history_times_with_zero_span_share_end() {
        let mut generator = LeadGenerator::new(3);
        assert_eq!(generator.history_times(3, 100, 0), [100, 100, 100]);
        assert!(generator.history_times(0, 100, 50).is_empty());
    }

    #[test]
    fn leads_mix_required_shapes() {
        let mut generator = LeadGenerator::new(11);
        let profiles: Vec<FormProfile> = (0..TEMPLATES.len())
            .map(|i| generator.form_profile(&format!("Form {i}")))
            .collect();
        let mut leads = Vec::new();
        for profile in &profiles {
            for _ in 0..200 {
                let id = generator.next_lead_id();
                leads.push(generator.lead("f", profile, id, 1_700_000_000));
            }
        }

        let organic = leads.iter().filter(|l| l["is_organic"] == true).count();
        assert!(
            (40..=120).contains(&organic),
            "{organic} organic leads of 800"
        );
        for lead in leads.iter().filter(|l| l["is_organic"] == true) {
            assert!(lead.get("ad_id").is_none());
            assert!(lead.get("campaign_name").is_none());
        }
        assert!(leads.iter().any(|l| l["platform"] == "ig"));
        assert!(leads
            .iter()
            .any(|l| l.contains_key("custom_disclaimer_responses")));
        assert!(leads.iter().any(|l| l.contains_key("partner_name")));

        let answers: Vec<&Value> = leads
            .iter()
            .flat_map(|l| l["field_data"].as_array().expect("field_data is a list"))
            .collect();
        assert!(answers.iter().any(|a| a["values"] == json!([])));
        assert!(answers
            .iter()
            .any(|a| a["values"].as_array().is_some_and(|v| v.len() > 1)));
        assert!(answers.iter().any(|a| a["values"][0] == "Zoë Ünal 😀"));
    }

    #[test]
    fn example_lead_matches_meta_guide() {
        let mut generator = LeadGenerator::new(1);
        let profile = generator.form_profile("Form");
        let lead = generator.example_lead("f", &profile, "9007199254740993".into(), 0);
        assert_eq!(
            lead["field_data"][0],
            json!({"name": "car_make", "values": ["Honda"]})
        );
        assert_eq!(lead["field_data"][1]["values"][0], "Joe Example");
        assert_eq!(lead["field_data"][2]["values"][0], "joe@example.com");
        assert_eq!(lead["field_data"][3]["values"][0], "99213450");
        assert_eq!(lead["ad_id"], profile.ads[0].ad_id.as_str());
    }
}
