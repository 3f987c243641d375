//! The word lists the offline rules score and group by. Terms are lowercase ASCII matched at word
//! boundaries; a trailing `*` matches any word starting with the stem (`negotiat*` matches
//! "negotiate" and "negotiation"); a term with capitals matches case-sensitively (`Go` the
//! language, not "go" the verb).

/// What a word or phrase in a task says about AI and that task: (term, automation, augmentation).
/// Routine information work (recording, checking, calculating) scores high on automation; work
/// that needs presence, trust or judgement (negotiating, inspecting, caring) scores low.
pub(crate) const TASK_SIGNALS: &[(&str, f64, f64)] = &[
    // Routine information processing: AI can do much of it alone.
    ("data entry", 0.9, 0.5),
    ("record*", 0.85, 0.6),
    ("log", 0.85, 0.5),
    ("enter", 0.85, 0.5),
    ("file", 0.7, 0.6),
    ("send*", 0.8, 0.5),
    ("issue", 0.7, 0.6),
    ("letter*", 0.8, 0.6),
    ("acknowledg*", 0.8, 0.5),
    ("payment*", 0.7, 0.6),
    ("invoice*", 0.85, 0.6),
    ("calculat*", 0.85, 0.7),
    ("comput*", 0.8, 0.7),
    ("reconcil*", 0.8, 0.7),
    ("verif*", 0.7, 0.8),
    ("confirm*", 0.7, 0.7),
    ("check*", 0.75, 0.7),
    ("score*", 0.75, 0.75),
    ("track*", 0.8, 0.6),
    ("schedul*", 0.8, 0.6),
    ("process*", 0.7, 0.6),
    ("updat*", 0.7, 0.6),
    ("compil*", 0.8, 0.7),
    ("generat*", 0.75, 0.7),
    ("report*", 0.7, 0.8),
    ("document*", 0.7, 0.8),
    ("spreadsheet*", 0.8, 0.7),
    ("dashboard*", 0.7, 0.8),
    ("monitor*", 0.7, 0.85),
    ("vital signs", 0.7, 0.8),
    ("forecast*", 0.7, 0.85),
    ("estimat*", 0.6, 0.85),
    ("assign*", 0.65, 0.6),
    ("triage", 0.65, 0.8),
    ("classif*", 0.8, 0.7),
    ("sanctions list", 0.9, 0.6),
    ("database*", 0.75, 0.7),
    ("summar*", 0.8, 0.8),
    ("automat*", 0.6, 0.8),
    ("test*", 0.55, 0.85),
    ("deploy*", 0.6, 0.8),
    ("pipeline*", 0.6, 0.8),
    ("fast-track", 0.7, 0.6),
    ("rules", 0.75, 0.7),
    ("fraud*", 0.6, 0.85),
    // Knowledge work: AI helps a person more than it replaces them.
    ("close", 0.6, 0.5),
    ("audit*", 0.55, 0.85),
    ("review*", 0.55, 0.85),
    ("draft*", 0.65, 0.85),
    ("write", 0.5, 0.85),
    ("set", 0.5, 0.75),
    ("reserve*", 0.55, 0.8),
    ("determin*", 0.45, 0.85),
    ("apply", 0.55, 0.75),
    ("obtain*", 0.55, 0.6),
    ("gather*", 0.6, 0.8),
    ("collect*", 0.65, 0.7),
    ("feedback", 0.55, 0.8),
    ("share", 0.5, 0.6),
    ("refer*", 0.5, 0.6),
    ("identif*", 0.5, 0.85),
    ("analy*", 0.6, 0.9),
    ("research*", 0.5, 0.9),
    ("investigat*", 0.35, 0.85),
    ("assess*", 0.35, 0.8),
    ("evaluat*", 0.45, 0.85),
    ("plan*", 0.35, 0.8),
    ("design*", 0.3, 0.85),
    ("build*", 0.35, 0.85),
    ("develop*", 0.35, 0.85),
    ("creat*", 0.5, 0.8),
    ("maintain*", 0.45, 0.8),
    ("operat*", 0.45, 0.8),
    ("improv*", 0.3, 0.85),
    ("manag*", 0.35, 0.8),
    ("renewal*", 0.5, 0.75),
    ("coordinat*", 0.35, 0.75),
    ("escalat*", 0.45, 0.7),
    ("incident*", 0.35, 0.8),
    ("postmortem*", 0.45, 0.85),
    ("pull request*", 0.45, 0.85),
    ("api*", 0.4, 0.85),
    ("contact*", 0.5, 0.6),
    ("approv*", 0.4, 0.7),
    ("respond*", 0.3, 0.6),
    ("perform", 0.4, 0.6),
    // Presence, trust, care and judgement: AI does little of it alone.
    ("onboard*", 0.35, 0.7),
    ("explain*", 0.3, 0.75),
    ("educat*", 0.25, 0.7),
    ("train*", 0.25, 0.75),
    ("present*", 0.3, 0.75),
    ("webinar*", 0.3, 0.75),
    ("meeting*", 0.25, 0.65),
    ("kickoff*", 0.25, 0.65),
    ("customer*", 0.3, 0.7),
    ("claimant*", 0.3, 0.65),
    ("executive*", 0.2, 0.6),
    ("stakeholder*", 0.2, 0.65),
    ("on-call", 0.3, 0.7),
    ("negotiat*", 0.15, 0.6),
    ("settlement*", 0.3, 0.65),
    ("counsel*", 0.1, 0.5),
    ("interview*", 0.2, 0.6),
    ("inspect*", 0.2, 0.6),
    ("photograph*", 0.25, 0.5),
    ("on site", 0.1, 0.4),
    ("site visit*", 0.1, 0.4),
    ("vehicle*", 0.2, 0.5),
    ("mentor*", 0.1, 0.45),
    ("coach*", 0.1, 0.45),
    ("supervis*", 0.15, 0.5),
    ("delegat*", 0.2, 0.5),
    ("lead", 0.15, 0.55),
    ("relationship*", 0.15, 0.55),
    ("empath*", 0.05, 0.4),
    ("administer*", 0.1, 0.5),
    ("medication*", 0.2, 0.6),
    ("wound care", 0.05, 0.3),
    ("dressing*", 0.05, 0.3),
    ("patient*", 0.2, 0.6),
    ("famil*", 0.15, 0.55),
    ("code blue", 0.05, 0.35),
    ("emergenc*", 0.1, 0.45),
];

/// Words that make a task statement vague: it is then scored with less confidence.
pub(crate) const VAGUE: &[&str] = &[
    "various",
    "other duties",
    "other tasks",
    "as needed",
    "as required",
    "as assigned",
    "as directed",
    "etc",
    "miscellaneous",
    "ad hoc",
    "ad-hoc",
    "assist with",
    "assist in",
    "help with",
    "help out",
    "support the team",
    "stuff",
    "things",
    "and more",
];

/// Leading verbs and the standard verb a task taxonomy uses for them. The keys are also the verbs
/// that make a sentence a task when a document has no task section.
pub(crate) const STANDARD_VERBS: &[(&str, &str)] = &[
    ("administer", "Administer"),
    ("adjust", "Adjust"),
    ("analyse", "Analyze"),
    ("analyze", "Analyze"),
    ("answer", "Respond to"),
    ("apply", "Apply"),
    ("approve", "Approve"),
    ("assess", "Assess"),
    ("assign", "Assign"),
    ("assist", "Support"),
    ("audit", "Audit"),
    ("automate", "Automate"),
    ("build", "Develop"),
    ("calculate", "Calculate"),
    ("carry", "Perform"),
    ("check", "Verify"),
    ("close", "Close"),
    ("coach", "Mentor"),
    ("collect", "Collect"),
    ("communicate", "Communicate"),
    ("compile", "Compile"),
    ("conduct", "Perform"),
    ("confirm", "Verify"),
    ("contact", "Contact"),
    ("coordinate", "Coordinate"),
    ("create", "Develop"),
    ("decide", "Determine"),
    ("delegate", "Delegate"),
    ("deploy", "Deploy"),
    ("design", "Design"),
    ("determine", "Determine"),
    ("develop", "Develop"),
    ("document", "Document"),
    ("draft", "Write"),
    ("educate", "Educate"),
    ("ensure", "Ensure"),
    ("enter", "Record"),
    ("escalate", "Escalate"),
    ("estimate", "Estimate"),
    ("evaluate", "Assess"),
    ("examine", "Inspect"),
    ("expedite", "Expedite"),
    ("explain", "Explain"),
    ("fast-track", "Expedite"),
    ("forecast", "Forecast"),
    ("gather", "Collect"),
    ("hand", "Hand off"),
    ("handle", "Process"),
    ("help", "Support"),
    ("identify", "Identify"),
    ("implement", "Implement"),
    ("improve", "Improve"),
    ("inspect", "Inspect"),
    ("interview", "Interview"),
    ("investigate", "Investigate"),
    ("issue", "Issue"),
    ("lead", "Lead"),
    ("liaise", "Coordinate"),
    ("log", "Record"),
    ("maintain", "Maintain"),
    ("manage", "Manage"),
    ("mentor", "Mentor"),
    ("monitor", "Monitor"),
    ("negotiate", "Negotiate"),
    ("obtain", "Collect"),
    ("onboard", "Onboard"),
    ("operate", "Operate"),
    ("optimise", "Improve"),
    ("optimize", "Improve"),
    ("oversee", "Supervise"),
    ("perform", "Perform"),
    ("photograph", "Photograph"),
    ("plan", "Plan"),
    ("prepare", "Prepare"),
    ("present", "Present"),
    ("process", "Process"),
    ("provide", "Provide"),
    ("record", "Record"),
    ("refer", "Refer"),
    ("research", "Research"),
    ("resolve", "Resolve"),
    ("respond", "Respond"),
    ("review", "Review"),
    ("run", "Conduct"),
    ("schedule", "Schedule"),
    ("score", "Assess"),
    ("send", "Send"),
    ("set", "Set"),
    ("share", "Communicate"),
    ("supervise", "Supervise"),
    ("support", "Support"),
    ("teach", "Educate"),
    ("test", "Test"),
    ("track", "Track"),
    ("train", "Train"),
    ("triage", "Assess"),
    ("update", "Update"),
    ("validate", "Verify"),
    ("verify", "Verify"),
    ("write", "Write"),
];

/// Words that end a task's object when naming it in standard form ("claims *by* interviewing…").
pub(crate) const CLAUSE_BREAKS: &[&str] = &[
    "according",
    "after",
    "against",
    "as",
    "at",
    "before",
    "by",
    "for",
    "from",
    "in",
    "including",
    "on",
    "once",
    "so",
    "that",
    "through",
    "to",
    "under",
    "using",
    "via",
    "when",
    "which",
    "while",
    "with",
    "within",
];

/// Words dropped from a task's object in its standard name.
pub(crate) const DETERMINERS: &[&str] =
    &["a", "an", "the", "each", "every", "all", "any", "new", "their", "your", "our", "its", "his", "her", "other"];

/// The clusters of the offline skills architecture, and what their skills mean for reskilling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Category {
    /// Working with people.
    Communication,
    /// Making sense of information.
    Analysis,
    /// Organising work and people.
    Management,
    /// Software and tools.
    Technology,
    /// What the role's field knows.
    Domain,
}

impl Category {
    /// In cluster order.
    pub(crate) const ALL: [Category; 5] =
        [Self::Communication, Self::Analysis, Self::Management, Self::Technology, Self::Domain];

    /// The cluster's name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Communication => "Communication and relationships",
            Self::Analysis => "Analysis and problem solving",
            Self::Management => "Planning and management",
            Self::Technology => "Technology and tools",
            Self::Domain => "Domain knowledge",
        }
    }

    /// How exposed the skill's work is to automation when no task of the role says (the
    /// mean automation of its related tasks wins when there are some).
    pub(crate) fn exposure(self) -> f64 {
        match self {
            Self::Technology => 0.6,
            Self::Analysis | Self::Domain => 0.5,
            Self::Management => 0.35,
            Self::Communication => 0.2,
        }
    }

    /// The categories a reskilling path from this one leads to, preferred first.
    pub(crate) fn growth(self) -> [Category; 2] {
        match self {
            Self::Technology | Self::Domain => [Self::Analysis, Self::Communication],
            Self::Analysis => [Self::Communication, Self::Management],
            Self::Management => [Self::Communication, Self::Analysis],
            Self::Communication => [Self::Analysis, Self::Management],
        }
    }
}

/// Skills the rules know by name, and their cluster. Used to find skills in requirements and task
/// statements and to cluster every skill by the first known term in its name.
pub(crate) const SKILL_TERMS: &[(&str, Category)] = &[
    ("communication*", Category::Communication),
    ("written communication", Category::Communication),
    ("verbal communication", Category::Communication),
    ("presentation*", Category::Communication),
    ("public speaking", Category::Communication),
    ("negotiation", Category::Communication),
    ("conflict resolution", Category::Communication),
    ("relationship management", Category::Communication),
    ("relationship building", Category::Communication),
    ("stakeholder management", Category::Communication),
    ("customer service", Category::Communication),
    ("empathy", Category::Communication),
    ("interviewing", Category::Communication),
    ("teamwork", Category::Communication),
    ("collaboration", Category::Communication),
    ("patient education", Category::Communication),
    ("coaching", Category::Communication),
    ("mentoring", Category::Communication),
    ("technical writing", Category::Communication),
    ("active listening", Category::Communication),
    ("data analysis", Category::Analysis),
    ("analytical", Category::Analysis),
    ("analytics", Category::Analysis),
    ("problem solving", Category::Analysis),
    ("problem-solving", Category::Analysis),
    ("critical thinking", Category::Analysis),
    ("research", Category::Analysis),
    ("fraud detection", Category::Analysis),
    ("damage estimation", Category::Analysis),
    ("estimation", Category::Analysis),
    ("risk assessment", Category::Analysis),
    ("clinical assessment", Category::Analysis),
    ("decision making", Category::Analysis),
    ("decision-making", Category::Analysis),
    ("attention to detail", Category::Analysis),
    ("statistics", Category::Analysis),
    ("forecasting", Category::Analysis),
    ("root cause analysis", Category::Analysis),
    ("troubleshooting", Category::Analysis),
    ("dosage calculation", Category::Analysis),
    ("project management", Category::Management),
    ("time management", Category::Management),
    ("account management", Category::Management),
    ("people management", Category::Management),
    ("change management", Category::Management),
    ("leadership", Category::Management),
    ("supervision", Category::Management),
    ("delegation", Category::Management),
    ("planning", Category::Management),
    ("prioriti*", Category::Management),
    ("budgeting", Category::Management),
    ("sql", Category::Technology),
    ("postgresql", Category::Technology),
    ("python", Category::Technology),
    ("Rust", Category::Technology),
    ("Go", Category::Technology),
    ("java", Category::Technology),
    ("javascript", Category::Technology),
    ("typescript", Category::Technology),
    ("excel", Category::Technology),
    ("microsoft office", Category::Technology),
    ("spreadsheets", Category::Technology),
    ("salesforce", Category::Technology),
    ("hubspot", Category::Technology),
    ("crm", Category::Technology),
    ("gainsight", Category::Technology),
    ("xactimate", Category::Technology),
    ("ccc one", Category::Technology),
    ("guidewire", Category::Technology),
    ("claimcenter", Category::Technology),
    ("Epic", Category::Technology),
    ("electronic health record*", Category::Technology),
    ("kubernetes", Category::Technology),
    ("docker", Category::Technology),
    ("git", Category::Technology),
    ("ci/cd", Category::Technology),
    ("prometheus", Category::Technology),
    ("opentelemetry", Category::Technology),
    ("observability", Category::Technology),
    ("bi dashboards", Category::Technology),
    ("tableau", Category::Technology),
    ("power bi", Category::Technology),
    ("programming", Category::Technology),
    ("distributed systems", Category::Technology),
    ("automated testing", Category::Technology),
    ("code review", Category::Technology),
    ("grpc", Category::Technology),
    ("machine learning", Category::Technology),
    ("infusion pump*", Category::Technology),
    ("property and casualty", Category::Domain),
    ("insurance", Category::Domain),
    ("claims handling", Category::Domain),
    ("subrogation", Category::Domain),
    ("underwriting", Category::Domain),
    ("saas", Category::Domain),
    ("subscription metrics", Category::Domain),
    ("bookkeeping", Category::Domain),
    ("double-entry bookkeeping", Category::Domain),
    ("accounting", Category::Domain),
    ("payment schemes", Category::Domain),
    ("clinical", Category::Domain),
    ("medication administration", Category::Domain),
    ("iv insertion", Category::Domain),
    ("nursing", Category::Domain),
    ("infection prevention", Category::Domain),
    ("infection control", Category::Domain),
    ("wound care", Category::Domain),
    ("compliance", Category::Domain),
    ("finance", Category::Domain),
    ("customer success", Category::Domain),
    ("consulting", Category::Domain),
    ("life support", Category::Domain),
];

/// Wording that says how much of a skill a role needs: (term, proficiency 1–5). The strongest
/// wording on the skill's line wins.
pub(crate) const PROFICIENCY: &[(&str, u8)] = &[
    ("expert*", 5),
    ("mastery", 5),
    ("deep", 5),
    ("advanced", 4),
    ("strong", 4),
    ("extensive", 4),
    ("excellent", 4),
    ("proven", 4),
    ("in-depth", 4),
    ("proficien*", 3),
    ("solid", 3),
    ("skilled", 3),
    ("experience*", 3),
    ("clear", 3),
    ("working knowledge", 2),
    ("knowledge of", 2),
    ("understanding of", 2),
    ("familiar*", 1),
    ("basic", 1),
    ("exposure", 1),
    ("awareness", 1),
];

/// Names of proficiency levels 1–5.
pub(crate) const LEVELS: [&str; 5] = ["basic", "working knowledge", "proficient", "advanced", "expert"];

/// Phrases that introduce a skill in a requirement ("Experience with *X*"): stripped to leave the
/// skill's name.
pub(crate) const LEAD_INS: &[&str] = &[
    "experience with",
    "experience in",
    "experience of",
    "working knowledge of",
    "knowledge of",
    "understanding of",
    "proficiency in",
    "proficiency with",
    "proficient in",
    "proficient with",
    "familiarity with",
    "familiar with",
    "expertise in",
    "skilled in",
    "strong",
    "excellent",
    "solid",
    "proven",
    "advanced",
    "demonstrated",
    "good",
];

/// Number words in "three or more years".
pub(crate) const NUMBERS: &[(&str, u32)] = &[
    ("one", 1),
    ("two", 2),
    ("three", 3),
    ("four", 4),
    ("five", 5),
    ("six", 6),
    ("seven", 7),
    ("eight", 8),
    ("nine", 9),
    ("ten", 10),
];

/// Every place `term` occurs in `text` at word boundaries, as byte ranges of `text` (a stem's
/// range runs to the end of the word). Matching is ASCII case-insensitive unless the term has
/// capitals, so byte offsets of the folded text are those of the original.
pub(crate) fn find_term(text: &str, term: &str) -> Vec<(usize, usize)> {
    let (stem, is_stem) = match term.strip_suffix('*') {
        Some(stem) => (stem, true),
        None => (term, false),
    };
    let case_sensitive = stem.chars().any(|c| c.is_ascii_uppercase());
    let hay = if case_sensitive { text.to_owned() } else { text.to_ascii_lowercase() };
    let word_byte = |b: u8| b.is_ascii_alphanumeric() || b >= 0x80;
    let bytes = hay.as_bytes();
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(at) = hay.get(from..).and_then(|rest| rest.find(stem)) {
        let start = from + at;
        let mut end = start + stem.len();
        from = start + 1;
        if start > 0 && word_byte(bytes[start - 1]) {
            continue;
        }
        if is_stem {
            while end < bytes.len() && (word_byte(bytes[end]) || bytes[end] == b'-') {
                end += 1;
            }
        } else if end < bytes.len() && word_byte(bytes[end]) {
            continue;
        }
        // Never split a multi-byte character (the stem and word bytes are ASCII, so the range
        // starts and ends on boundaries; this guards the invariant).
        if text.is_char_boundary(start) && text.is_char_boundary(end) {
            found.push((start, end));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_match_words_and_stems_only() {
        assert_eq!(find_term("Negotiate; negotiation", "negotiat*"), [(0, 9), (11, 22)]);
        assert_eq!(find_term("logistics log", "log"), [(10, 13)]);
        assert_eq!(find_term("Go to Go", "Go"), [(0, 2), (6, 8)]);
        assert!(find_term("go now", "Go").is_empty());
        assert_eq!(find_term("café SQL", "sql"), [(6, 9)]);
    }
}
