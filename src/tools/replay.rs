//! `keygate policy replay`: re-decides recorded history against a candidate policy set and
//! reports what would flip — the check a platform team runs before a change reaches many teams.
//!
//! The audit trail's `response_complete` events of governed decisions carry a decision input
//! (`policy::input`). Replay verifies the hash chain first (a broken chain is refused, naming the
//! sequence where it broke, unless `--no-verify`), then reads every event of the trail — rotated
//! files oldest first, then the current file, one line at a time, so memory stays bounded however
//! long the trail — and decides each recorded input again with the candidate's matrix and
//! policies (and quota), through the same [`crate::policy::decide`] as the request path. Role
//! bindings and inventory are those recorded with the event, or today's files with
//! `--current-data`.
//!
//! The report: decisions replayed, flips allow→deny and deny→allow, decisions that now error (an
//! enforced policy that fails to evaluate denies, and is reported as an error, never as an allow),
//! grouped by policy id and by principal, sample changed decisions with both explanations, and
//! dry-run would-deny findings before and after. Events recorded without a decision input (before
//! keygate recorded one, or when the decision stopped at a failed lookup) are counted as not
//! replayable, never guessed.
//!
//! Exit codes: 0 nothing flips, 1 something flips (or now errors), 2 bad input (config, files,
//! broken chain).

use std::collections::{BTreeMap, HashMap};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::policy::bindings::BindingIndex;
use crate::policy::decide::{decide, Response, Rules};
use crate::policy::input::{DecisionInput, InputBinding, InputInventory, InputOutcome};
use crate::policy::quota::QuotaConfig;
use crate::policy::runtime::{read_file, AuthzRuntime};
use crate::policy::AuthzSnapshot;

/// Exit code: nothing flips.
const UNCHANGED: u8 = 0;
/// Exit code: something flips or now errors.
const CHANGED: u8 = 1;
/// Exit code: bad input.
const BAD_INPUT: u8 = 2;

/// Most principals tracked one by one; the rest are summed under [`OTHER_PRINCIPALS`].
const MAX_PRINCIPALS: usize = 10_000;
/// Where principals past [`MAX_PRINCIPALS`] are counted.
const OTHER_PRINCIPALS: &str = "(other principals)";
/// Principals listed in the text report.
const LISTED_PRINCIPALS: usize = 20;

/// What `keygate policy replay` is asked.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// Audit files (each with its rotated files).
    pub audit: Vec<PathBuf>,
    /// The candidate config (matrix, policies, quota; bindings and inventory with
    /// `current_data`).
    pub config: PathBuf,
    /// Only events at or after this time.
    pub since: Option<SystemTime>,
    /// Only events before this time.
    pub until: Option<SystemTime>,
    /// Only this principal's decisions.
    pub principal: Option<String>,
    /// Print JSON.
    pub json: bool,
    /// Decide with today's bindings and inventory (the candidate config's files).
    pub current_data: bool,
    /// Verify the hash chain first.
    pub verify: bool,
    /// Sample changed decisions per kind of change.
    pub samples: usize,
}

/// `keygate policy replay` (see the module doc).
pub fn replay(options: &ReplayOptions) -> ExitCode {
    let fail = |message: String| {
        eprintln!("keygate policy replay: {message}");
        ExitCode::from(BAD_INPUT)
    };
    let config = match Config::load_without_secrets(&options.config) {
        Ok(config) => config,
        Err(err) => return fail(err.to_string()),
    };
    let replayer = match Replayer::from_config(&config, options.current_data) {
        Ok(replayer) => replayer,
        Err(message) => return fail(message),
    };
    if options.verify {
        for file in &options.audit {
            if let Err(message) = verify(file) {
                return fail(message);
            }
        }
    }
    let filter = Filter::new(options);
    let mut report = Report::new(options.samples);
    report.candidate_revision = replayer.snapshot.revision().to_string();
    for file in &options.audit {
        if let Err(message) = replayer.replay_trail(file, &filter, &mut report) {
            return fail(message);
        }
    }
    report.finish();
    if options.json {
        match serde_json::to_string_pretty(&report) {
            Ok(text) => println!("{text}"),
            Err(err) => return fail(err.to_string()),
        }
    } else {
        print!("{}", report.render());
    }
    ExitCode::from(if report.changed() { CHANGED } else { UNCHANGED })
}

/// Verifies one trail's hash chain: `Err` names where it broke.
fn verify(file: &Path) -> Result<(), String> {
    use crate::audit::VerifyReport;
    match crate::audit::verify(file) {
        VerifyReport::Ok { .. } | VerifyReport::TornTail { .. } => Ok(()),
        VerifyReport::Broken { sequence, reason } => Err(format!(
            "the audit trail `{}` is broken at sequence {sequence}: {reason}; refusing to replay it (`--no-verify` replays it anyway)",
            file.display()
        )),
        VerifyReport::Unreadable { reason } => Err(format!("cannot read the audit trail: {reason}")),
    }
}

/// Which events to replay.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Events at or after this time (RFC 3339 as the audit writes it: compared as text).
    since: Option<String>,
    /// Events before this time.
    until: Option<String>,
    /// Only this principal.
    principal: Option<String>,
}

impl Filter {
    fn new(options: &ReplayOptions) -> Filter {
        // The audit writes `time` as RFC 3339, UTC, microseconds: fixed width, so text order is
        // time order.
        let stamp = |t: SystemTime| humantime::format_rfc3339_micros(t).to_string();
        Filter {
            since: options.since.map(stamp),
            until: options.until.map(stamp),
            principal: options.principal.clone(),
        }
    }

    fn admits_time(&self, time: &str) -> bool {
        self.since.as_deref().is_none_or(|s| time >= s)
            && self.until.as_deref().is_none_or(|u| time < u)
    }
}

/// One audit line, as far as replay reads it.
#[derive(Debug, Deserialize)]
struct Line {
    #[serde(rename = "type")]
    event_type: String,
    time: String,
    data: LineData,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LineData {
    stage: String,
    request_id: String,
    #[serde(default)]
    principal: Option<LinePrincipal>,
    #[serde(default)]
    decision: Option<LineDecision>,
    #[serde(default)]
    decision_input: Option<DecisionInput>,
}

#[derive(Debug, Deserialize)]
struct LinePrincipal {
    id: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LineDecision {
    #[serde(default)]
    rule_ids: Vec<String>,
    #[serde(default)]
    explanation: Option<String>,
}

/// Decides recorded inputs with a candidate policy set.
#[derive(Debug)]
pub struct Replayer {
    /// The candidate's matrix and policies, with today's bindings and inventory when known.
    snapshot: AuthzSnapshot,
    /// The candidate's quota.
    quota: Option<QuotaConfig>,
    /// Decide with `snapshot`'s bindings and inventory instead of the recorded ones.
    current_data: bool,
    /// The recorded data of the previous event, built (consecutive events often share it).
    last: std::sync::Mutex<Option<RecordedData>>,
}

#[derive(Debug)]
struct RecordedData {
    bindings: Vec<InputBinding>,
    inventory: InputInventory,
    snapshot: Arc<AuthzSnapshot>,
}

impl Replayer {
    /// The candidate of `config`: its matrix, organisation policies and quota (never its
    /// secrets; nothing is contacted). With `current_data`, its bindings and inventory must be
    /// files.
    pub fn from_config(config: &Config, current_data: bool) -> Result<Replayer, String> {
        let runtime = AuthzRuntime::new(config.authz.clone(), config.policy.clone(), None);
        let files = runtime
            .load_files(&read_file, config.ratelimit.canonical())
            .map_err(|e| format!("the candidate does not load: {e}"))?;
        let (bindings, inventory) = match (files.bindings, files.inventory) {
            (Some(b), Some(i)) => (b, i),
            _ if current_data => {
                return Err(
                    "`--current-data` decides with the candidate config's role bindings and inventory, and it takes them from the upstream: point `authz.bindings` and `authz.inventory` at files".into(),
                )
            }
            (b, i) => (
                b.unwrap_or_else(|| BindingIndex::empty(config.authz.org_id.clone())),
                i.unwrap_or_default(),
            ),
        };
        let snapshot = AuthzSnapshot::new(
            Arc::new(files.matrix),
            Arc::new(bindings),
            Arc::new(inventory),
            Instant::now(),
        )
        .with_org(files.org)
        .with_revision(files.revision)
        .with_parts(files.parts);
        Ok(Replayer {
            snapshot,
            quota: config.quota.clone(),
            current_data,
            last: std::sync::Mutex::new(None),
        })
    }

    /// The candidate: its matrix and policies, with the candidate config's bindings and inventory
    /// when they are files.
    pub fn snapshot(&self) -> &AuthzSnapshot {
        &self.snapshot
    }

    /// The candidate's policy revision.
    pub fn revision(&self) -> &str {
        self.snapshot.revision()
    }

    /// Decides one recorded input with the candidate.
    pub fn decide(&self, input: &DecisionInput, request_id: &str) -> Result<Response, String> {
        let rebuilt = input.rebuild()?;
        let snapshot = if self.current_data {
            None
        } else {
            Some(self.recorded(input)?)
        };
        let rules = Rules {
            snapshot: snapshot.as_deref().unwrap_or(&self.snapshot),
            quota: self.quota.as_ref(),
        };
        Ok(decide(
            &rules,
            &rebuilt.request(input, request_id),
            &rebuilt.facts,
        ))
    }

    /// The candidate over `input`'s recorded bindings and inventory.
    fn recorded(&self, input: &DecisionInput) -> Result<Arc<AuthzSnapshot>, String> {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(data) = last.as_ref() {
            if data.bindings == input.bindings && data.inventory == input.inventory {
                return Ok(data.snapshot.clone());
            }
        }
        let snapshot = Arc::new(input.recorded_snapshot(&self.snapshot)?);
        *last = Some(RecordedData {
            bindings: input.bindings.clone(),
            inventory: input.inventory.clone(),
            snapshot: snapshot.clone(),
        });
        Ok(snapshot)
    }

    /// Replays one trail: the rotated files of `file`, oldest first, then `file`.
    pub fn replay_trail(
        &self,
        file: &Path,
        filter: &Filter,
        report: &mut Report,
    ) -> Result<(), String> {
        let mut files: Vec<PathBuf> = crate::audit::chain::rotated_files(file)
            .map_err(|e| format!("`{}`: {e}", file.display()))?
            .into_iter()
            .map(|r| r.path)
            .collect();
        if file.exists() || files.is_empty() {
            files.push(file.to_path_buf());
        }
        for path in files {
            let f = std::fs::File::open(&path)
                .map_err(|e| format!("`{}`: cannot read: {e}", path.display()))?;
            let mut reader = std::io::BufReader::with_capacity(1 << 16, f);
            let mut line = String::new();
            loop {
                line.clear();
                let n = reader
                    .read_line(&mut line)
                    .map_err(|e| format!("`{}`: cannot read: {e}", path.display()))?;
                // The end, or a torn final line (a crash mid-write: not a record).
                if n == 0 || !line.ends_with('\n') {
                    break;
                }
                self.replay_line(&line, filter, report);
            }
        }
        Ok(())
    }

    /// Replays one audit line into `report`.
    pub fn replay_line(&self, line: &str, filter: &Filter, report: &mut Report) {
        let Ok(event) = serde_json::from_str::<Line>(line) else {
            report.unreadable += 1;
            return;
        };
        let data = event.data;
        // Governed decisions only: the decide stage recorded a rule id.
        let decided = data
            .decision
            .as_ref()
            .is_some_and(|d| !d.rule_ids.is_empty());
        if !event.event_type.starts_with("io.keygate.apikey.")
            || data.stage != "response_complete"
            || !(decided || data.decision_input.is_some())
            || !filter.admits_time(&event.time)
        {
            return;
        }
        let principal = data
            .decision_input
            .as_ref()
            .map(|i| i.principal.id.as_str())
            .or(data.principal.as_ref().map(|p| p.id.as_str()))
            .unwrap_or("-");
        if filter.principal.as_deref().is_some_and(|p| p != principal) {
            return;
        }
        let Some(input) = &data.decision_input else {
            report.not_replayable += 1;
            return;
        };
        let new = match self.decide(input, &data.request_id) {
            Ok(response) => response,
            Err(reason) => {
                report.failed += 1;
                if report.failures.len() < report.sample_limit {
                    report
                        .failures
                        .push(format!("{}: {reason}", data.request_id));
                }
                return;
            }
        };
        let old_explanation = data.decision.and_then(|d| d.explanation);
        report.add(Replayed {
            request_id: &data.request_id,
            time: &event.time,
            input,
            old_explanation: old_explanation.as_deref(),
            new: &new,
        });
    }
}

/// One replayed decision.
struct Replayed<'a> {
    request_id: &'a str,
    time: &'a str,
    input: &'a DecisionInput,
    old_explanation: Option<&'a str>,
    new: &'a Response,
}

/// Counts of one group (a policy id or a principal).
#[derive(Debug, Clone, Copy, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Counts {
    /// Allowed before, denied now.
    pub allow_to_deny: u64,
    /// Denied before, allowed now.
    pub deny_to_allow: u64,
    /// Erroring now (and not before).
    pub now_error: u64,
}

impl Counts {
    fn total(&self) -> u64 {
        self.allow_to_deny + self.deny_to_allow + self.now_error
    }
}

/// A changed decision, as shown.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Sample {
    /// The request id.
    pub request_id: String,
    /// When.
    pub time: String,
    /// Who.
    pub principal: String,
    /// What.
    pub action: String,
    /// On what: the key id, or the owner and resource of a create.
    pub target: String,
    /// The recorded decision.
    pub old: Side,
    /// The candidate's decision.
    pub new: Side,
}

/// One side of a sample.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Side {
    /// `allow`, `deny`, `error` or `unavailable`.
    pub decision: String,
    /// What denied.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub denied_by: Vec<String>,
    /// Why.
    pub explanation: String,
}

/// Dry-run findings of one policy, before and after.
#[derive(Debug, Clone, Copy, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DryRun {
    /// Recorded would-deny findings.
    pub recorded: u64,
    /// The candidate's would-deny findings.
    pub candidate: u64,
}

/// What a replay found.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// The candidate's policy revision.
    pub candidate_revision: String,
    /// Decisions replayed.
    pub replayed: u64,
    /// Replayed decisions with the same outcome.
    pub unchanged: u64,
    /// Denied both times, by other rules or policies.
    pub reasons_changed: u64,
    /// Flips allow → deny.
    pub allow_to_deny: u64,
    /// Flips deny → allow.
    pub deny_to_allow: u64,
    /// Decisions that now error (an enforced policy fails to evaluate, or the quota counts are
    /// unknown to the candidate's quota).
    pub now_error: u64,
    /// Decisions that could not be made when recorded (503), replayed without comparison.
    pub was_unavailable: u64,
    /// Governed decisions recorded without a decision input.
    pub not_replayable: u64,
    /// Recorded inputs that could not be rebuilt (see `failures`).
    pub failed: u64,
    /// Lines that are not audit events.
    pub unreadable: u64,
    /// Changes by policy or rule id: what denies now (allow→deny), what denied before
    /// (deny→allow), what fails to evaluate (now erroring).
    pub by_policy: BTreeMap<String, Counts>,
    /// Changes by principal.
    pub by_principal: BTreeMap<String, Counts>,
    /// Dry-run would-deny findings by policy id.
    pub dry_run: BTreeMap<String, DryRun>,
    /// Sample flips allow → deny.
    pub samples_allow_to_deny: Vec<Sample>,
    /// Sample flips deny → allow.
    pub samples_deny_to_allow: Vec<Sample>,
    /// Sample decisions that now error.
    pub samples_now_error: Vec<Sample>,
    /// Why inputs could not be rebuilt (the first few).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<String>,
    #[serde(skip)]
    sample_limit: usize,
    #[serde(skip)]
    principals: HashMap<String, Counts>,
}

impl Report {
    /// An empty report keeping `samples` samples per kind of change.
    pub fn new(samples: usize) -> Report {
        Report {
            candidate_revision: String::new(),
            replayed: 0,
            unchanged: 0,
            reasons_changed: 0,
            allow_to_deny: 0,
            deny_to_allow: 0,
            now_error: 0,
            was_unavailable: 0,
            not_replayable: 0,
            failed: 0,
            unreadable: 0,
            by_policy: BTreeMap::new(),
            by_principal: BTreeMap::new(),
            dry_run: BTreeMap::new(),
            samples_allow_to_deny: Vec::new(),
            samples_deny_to_allow: Vec::new(),
            samples_now_error: Vec::new(),
            failures: Vec::new(),
            sample_limit: samples,
            principals: HashMap::new(),
        }
    }

    /// Whether anything flipped or now errors.
    pub fn changed(&self) -> bool {
        self.allow_to_deny + self.deny_to_allow + self.now_error > 0
    }

    fn add(&mut self, r: Replayed<'_>) {
        self.replayed += 1;
        let old = &r.input.outcome;
        let new = InputOutcome::of(r.new);
        for id in &old.dry_run {
            self.dry_run.entry(id.clone()).or_default().recorded += 1;
        }
        for id in &new.dry_run {
            self.dry_run.entry(id.clone()).or_default().candidate += 1;
        }
        let refused = |d: &str| d == "deny" || d == "error";
        let (kind, ids): (Change, &[String]) = match (old.decision.as_str(), new.decision.as_str())
        {
            ("unavailable", _) => {
                self.was_unavailable += 1;
                return;
            }
            (o, n) if o == n && (o != "deny" || old.denied_by == new.denied_by) => {
                self.unchanged += 1;
                return;
            }
            (o, "error" | "unavailable") if o != "error" => (Change::NowError, &new.errors),
            (o, n) if refused(o) && refused(n) => {
                self.reasons_changed += 1;
                return;
            }
            ("allow", _) => (Change::AllowToDeny, &new.denied_by),
            (_, "allow") => (Change::DenyToAllow, &old.denied_by),
            _ => {
                self.unchanged += 1;
                return;
            }
        };
        let bump = |c: &mut Counts| match kind {
            Change::AllowToDeny => c.allow_to_deny += 1,
            Change::DenyToAllow => c.deny_to_allow += 1,
            Change::NowError => c.now_error += 1,
        };
        match kind {
            Change::AllowToDeny => self.allow_to_deny += 1,
            Change::DenyToAllow => self.deny_to_allow += 1,
            Change::NowError => self.now_error += 1,
        }
        if ids.is_empty() {
            // The quota counts unknown to the candidate: no policy id.
            bump(
                self.by_policy
                    .entry(crate::policy::quota::RULE.to_owned())
                    .or_default(),
            );
        }
        for id in ids {
            bump(self.by_policy.entry(id.clone()).or_default());
        }
        let principal = &r.input.principal.id;
        let full =
            self.principals.len() >= MAX_PRINCIPALS && !self.principals.contains_key(principal);
        let key = if full {
            OTHER_PRINCIPALS
        } else {
            principal.as_str()
        };
        bump(self.principals.entry(key.to_owned()).or_default());
        let samples = match kind {
            Change::AllowToDeny => &mut self.samples_allow_to_deny,
            Change::DenyToAllow => &mut self.samples_deny_to_allow,
            Change::NowError => &mut self.samples_now_error,
        };
        if samples.len() < self.sample_limit {
            samples.push(sample(&r, &new));
        }
    }

    /// Settles what is kept while replaying (call once, after the last event).
    pub fn finish(&mut self) {
        self.by_principal = std::mem::take(&mut self.principals).into_iter().collect();
    }

    /// The text report.
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "candidate policy revision: {}",
            self.candidate_revision
        );
        let _ = writeln!(out, "decisions replayed: {}", self.replayed);
        let _ = writeln!(out, "  unchanged: {}", self.unchanged);
        let _ = writeln!(out, "  allow -> deny: {}", self.allow_to_deny);
        let _ = writeln!(out, "  deny -> allow: {}", self.deny_to_allow);
        let _ = writeln!(out, "  now erroring: {}", self.now_error);
        let _ = writeln!(
            out,
            "  still denied, by other rules: {}",
            self.reasons_changed
        );
        if self.was_unavailable > 0 {
            let _ = writeln!(
                out,
                "  undecided when recorded (503), not compared: {}",
                self.was_unavailable
            );
        }
        let _ = writeln!(
            out,
            "not replayable (recorded without a decision input): {}",
            self.not_replayable
        );
        if self.failed > 0 {
            let _ = writeln!(out, "inputs that could not be rebuilt: {}", self.failed);
            for f in &self.failures {
                let _ = writeln!(out, "  {f}");
            }
        }
        if self.unreadable > 0 {
            let _ = writeln!(out, "lines that are not audit events: {}", self.unreadable);
        }
        let table = |out: &mut String, title: &str, rows: &mut Vec<(&String, &Counts)>| {
            if rows.is_empty() {
                return;
            }
            rows.sort_by(|a, b| b.1.total().cmp(&a.1.total()).then(a.0.cmp(b.0)));
            let _ = writeln!(out, "\n{title}  (allow->deny / deny->allow / now erroring)");
            for (id, c) in rows.iter().take(LISTED_PRINCIPALS) {
                let _ = writeln!(
                    out,
                    "  {id}: {} / {} / {}",
                    c.allow_to_deny, c.deny_to_allow, c.now_error
                );
            }
            if rows.len() > LISTED_PRINCIPALS {
                let _ = writeln!(out, "  … and {} more", rows.len() - LISTED_PRINCIPALS);
            }
        };
        table(&mut out, "by policy", &mut self.by_policy.iter().collect());
        table(
            &mut out,
            "by principal",
            &mut self.by_principal.iter().collect(),
        );
        if !self.dry_run.is_empty() {
            let _ = writeln!(out, "\ndry-run would-deny findings (recorded / candidate)");
            for (id, d) in &self.dry_run {
                let _ = writeln!(out, "  {id}: {} / {}", d.recorded, d.candidate);
            }
        }
        for (title, samples) in [
            ("allow -> deny", &self.samples_allow_to_deny),
            ("deny -> allow", &self.samples_deny_to_allow),
            ("now erroring", &self.samples_now_error),
        ] {
            if samples.is_empty() {
                continue;
            }
            let _ = writeln!(out, "\nsamples, {title}:");
            for s in samples {
                let _ = writeln!(
                    out,
                    "  {} {} {} {} {}",
                    s.time, s.request_id, s.principal, s.action, s.target
                );
                for (label, side) in [("was", &s.old), ("now", &s.new)] {
                    let by = if side.denied_by.is_empty() {
                        String::new()
                    } else {
                        format!(" [{}]", side.denied_by.join(", "))
                    };
                    let _ = writeln!(
                        out,
                        "    {label}: {}{by}: {}",
                        side.decision, side.explanation
                    );
                }
            }
        }
        out
    }
}

#[derive(Debug, Clone, Copy)]
enum Change {
    AllowToDeny,
    DenyToAllow,
    NowError,
}

fn sample(r: &Replayed<'_>, new: &InputOutcome) -> Sample {
    let input = r.input;
    let target = match (&input.key_id, &input.spec) {
        (Some(key), _) => format!("key {key}"),
        (None, Some(spec)) => format!(
            "owner {} on {}",
            spec.owner_id,
            spec.resource_id.as_deref().unwrap_or("cloud")
        ),
        (None, None) => "-".to_owned(),
    };
    Sample {
        request_id: r.request_id.to_owned(),
        time: r.time.to_owned(),
        principal: input.principal.id.clone(),
        action: input.action.clone(),
        target,
        old: Side {
            decision: input.outcome.decision.clone(),
            denied_by: input.outcome.denied_by.clone(),
            explanation: r.old_explanation.unwrap_or_default().to_owned(),
        },
        new: Side {
            decision: new.decision.clone(),
            denied_by: new.denied_by.clone(),
            explanation: r
                .new
                .unavailable
                .clone()
                .unwrap_or_else(|| r.new.explanation.clone()),
        },
    }
}

/// A `--since` / `--until` value: RFC 3339, or a duration back from now (`7d`, `12h`).
pub fn parse_time(text: &str) -> Result<SystemTime, String> {
    if let Ok(t) = humantime::parse_rfc3339_weak(text) {
        return Ok(t);
    }
    let back = humantime::parse_duration(text).map_err(|_| {
        format!("`{text}` is neither an RFC 3339 time nor a duration back from now (`7d`)")
    })?;
    SystemTime::now()
        .checked_sub(back)
        .ok_or_else(|| format!("`{text}` reaches before the epoch"))
}

/// What `keygate policy diff` is asked.
#[derive(Debug, Clone)]
pub struct DiffOptions {
    /// The config in force.
    pub old: PathBuf,
    /// The candidate.
    pub new: PathBuf,
    /// Audit files to replay with both, side by side (none: compare the sets only).
    pub audit: Vec<PathBuf>,
    /// Print JSON.
    pub json: bool,
    /// Verify the hash chains first.
    pub verify: bool,
}

/// What changed between two policy sets.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SetDiff {
    /// The old set's policy revision.
    pub old_revision: String,
    /// The new set's policy revision.
    pub new_revision: String,
    /// Policy ids only the new set has.
    pub added: Vec<String>,
    /// Policy ids only the old set has.
    pub removed: Vec<String>,
    /// Policy ids whose text, mode, reason or pointer changed.
    pub changed: Vec<String>,
    /// Whether the RBAC matrix changed.
    pub matrix_changed: bool,
    /// Whether the policies' schema or `[policy]` values changed although no policy did.
    pub policy_config_changed: bool,
    /// The replay of the trail with the old set (with `--audit`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replay_old: Option<Report>,
    /// The replay of the trail with the new set (with `--audit`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replay_new: Option<Report>,
}

impl SetDiff {
    /// Compares two candidates.
    pub fn of(old: &Replayer, new: &Replayer) -> SetDiff {
        let digests = |r: &Replayer| {
            r.snapshot
                .org_policies()
                .map(|p| p.policy_digests())
                .unwrap_or_default()
        };
        let (a, b) = (digests(old), digests(new));
        let (old_parts, new_parts) = (old.snapshot.parts(), new.snapshot.parts());
        let mut diff = SetDiff {
            old_revision: old.revision().to_owned(),
            new_revision: new.revision().to_owned(),
            added: b.keys().filter(|k| !a.contains_key(*k)).cloned().collect(),
            removed: a.keys().filter(|k| !b.contains_key(*k)).cloned().collect(),
            changed: a
                .iter()
                .filter(|(k, d)| b.get(*k).is_some_and(|e| e != *d))
                .map(|(k, _)| k.clone())
                .collect(),
            matrix_changed: old_parts.matrix != new_parts.matrix,
            ..SetDiff::default()
        };
        diff.policy_config_changed = old_parts.policies != new_parts.policies
            && diff.added.is_empty()
            && diff.removed.is_empty()
            && diff.changed.is_empty();
        diff
    }

    /// Whether the sets differ (or, replayed, decide differently).
    pub fn differs(&self) -> bool {
        !(self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty())
            || self.matrix_changed
            || self.policy_config_changed
            || self.replay_new.as_ref().is_some_and(Report::changed)
    }

    /// The text report.
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let _ = writeln!(out, "old revision: {}", self.old_revision);
        let _ = writeln!(out, "new revision: {}", self.new_revision);
        for (what, ids) in [
            ("added", &self.added),
            ("removed", &self.removed),
            ("changed", &self.changed),
        ] {
            let _ = writeln!(out, "{what}: {}", ids.len());
            for id in ids {
                let _ = writeln!(out, "  {id}");
            }
        }
        if self.matrix_changed {
            let _ = writeln!(out, "the RBAC matrix changed");
        }
        if self.policy_config_changed {
            let _ = writeln!(
                out,
                "the schema or the [policy] values changed (patterns, parameters, groups, modes)"
            );
        }
        if let (Some(a), Some(b)) = (&self.replay_old, &self.replay_new) {
            let _ = writeln!(out, "\nreplayed against the trail:   old / new");
            for (what, x, y) in [
                ("decisions replayed", a.replayed, b.replayed),
                ("unchanged", a.unchanged, b.unchanged),
                ("allow -> deny", a.allow_to_deny, b.allow_to_deny),
                ("deny -> allow", a.deny_to_allow, b.deny_to_allow),
                ("now erroring", a.now_error, b.now_error),
                ("not replayable", a.not_replayable, b.not_replayable),
            ] {
                let _ = writeln!(out, "  {what:<20} {x:>8} / {y}");
            }
            if !b.by_policy.is_empty() {
                let _ = writeln!(
                    out,
                    "new set, by policy (allow->deny / deny->allow / now erroring)"
                );
                for (id, c) in &b.by_policy {
                    let _ = writeln!(
                        out,
                        "  {id}: {} / {} / {}",
                        c.allow_to_deny, c.deny_to_allow, c.now_error
                    );
                }
            }
        }
        out
    }
}

/// `keygate policy diff OLD NEW [--audit FILE…]`: which policy ids were added, removed or changed
/// (by content), and with `--audit` the replay of the trail with each set, side by side. Exit 0
/// the sets are the same (and, replayed, decide alike), 1 they differ, 2 bad input.
pub fn diff(options: &DiffOptions) -> ExitCode {
    let fail = |message: String| {
        eprintln!("keygate policy diff: {message}");
        ExitCode::from(BAD_INPUT)
    };
    let load = |path: &Path| {
        let config = Config::load_without_secrets(path).map_err(|e| e.to_string())?;
        Replayer::from_config(&config, false)
    };
    let (old, new) = match (load(&options.old), load(&options.new)) {
        (Ok(old), Ok(new)) => (old, new),
        (Err(message), _) | (_, Err(message)) => return fail(message),
    };
    let mut diff = SetDiff::of(&old, &new);
    if !options.audit.is_empty() {
        if options.verify {
            for file in &options.audit {
                if let Err(message) = verify(file) {
                    return fail(message);
                }
            }
        }
        let mut reports = Vec::new();
        for replayer in [&old, &new] {
            let mut report = Report::new(0);
            report.candidate_revision = replayer.revision().to_owned();
            for file in &options.audit {
                if let Err(message) = replayer.replay_trail(file, &Filter::default(), &mut report) {
                    return fail(message);
                }
            }
            report.finish();
            reports.push(report);
        }
        diff.replay_new = reports.pop();
        diff.replay_old = reports.pop();
    }
    if options.json {
        match serde_json::to_string_pretty(&diff) {
            Ok(text) => println!("{text}"),
            Err(err) => return fail(err.to_string()),
        }
    } else {
        print!("{}", diff.render());
    }
    ExitCode::from(if diff.differs() { CHANGED } else { UNCHANGED })
}
