//! The lexical rules of Stanford CoreNLP 3.4.1's `PTBLexer` (a JFlex scanner)
//! as pycocoevalcap runs it: `PTBTokenizer -preserveLines -lowerCase`, i.e.
//! the lexer's defaults (`ptb3Escaping` on except `americanize` and
//! `escapeForwardSlashAsterisk`, `splitAssimilations` on, not
//! `strictTreebank3`).
//!
//! The 3.4.1 flex source is not published with the jar, so this table was
//! written from the `PTBLexer.flex` versions either side of it (2013 and
//! 2017) and settled rule by rule against the 3.4.1 jar itself: probes of
//! each rule (abbreviation lists, sentence-start words, file extensions,
//! SGML, e-mail and URL shapes) and some 100k seeded random caption-like and
//! character-soup lines, with no difference left before or after punctuation
//! removal. `tests/caption_metrics.rs` keeps 600-odd such lines (made by
//! `scripts/fixtures/caption_metrics.py`) as a regression check. Macros keep
//! their JFlex names and are referenced as `{NAME}`, so a reader can hold a
//! rule next to the flex source. JFlex scans with longest match over all rules
//! (trailing context counts towards the length), ties going to the earlier
//! rule; [`Lexer::next_match`] does the same. The scanner is `%caseless`,
//! which in JFlex affects literal text but not character classes: literals are
//! wrapped in `(?i:...)` here and classes are left case-sensitive.
//!
//! One file, though long: the rule table is one ordered list whose order
//! decides ties, and it reads best beside the flex source in one piece.

use std::collections::HashMap;

use regex_automata::meta::Regex;
use regex_automata::{Anchored, Input, MatchKind, PatternSet};

/// What a rule does with the text it matched (the JFlex action).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Action {
    /// The matched text is the token.
    Keep,
    /// Whitespace and friends: no token.
    Skip,
    /// An untokenizable character: deleted (the lexer's `firstDelete`).
    Delete,
    /// A line end: the `*NL*` token of `tokenizeNLs`, printed as a newline.
    LineBreak,
    /// The token is this fixed text (`-LRB-`, `--`, `...`, `<`).
    Replace(&'static str),
    /// `yypushback(n)`: the token is the text minus its last `n` characters,
    /// which are scanned again (`cannot` -> `can` + `not`).
    PushBack(usize),
    /// Quote normalisation to LaTeX style; `left` for an opening quote.
    Quotes { left: bool },
    /// Soft hyphens (U+00AD) removed.
    SoftHyphens,
    /// Spaces inside the token become U+00A0.
    Nbsp,
    /// Phone numbers: spaces to U+00A0, parentheses to `-LRB-`/`-RRB-`.
    Phone,
    /// Smileys: parentheses to `-LRB-`/`-RRB-`.
    Smiley,
    /// Runs of 3 or 4 hyphens become `--`.
    Dashes,
    /// Composed fraction characters spelled out (`½` -> `1/2`).
    Fraction,
    /// The lossy PTB3 currency mapping (`£` -> `#`, `€` -> `$`).
    Currency,
    /// `&amp;` -> `&`.
    Amp,
    /// An abbreviation before a sentence end: the token keeps its period
    /// and the period is also returned again as its own token.
    DuplicatePeriod,
    /// An acronym before a sentence-initial word: a one-letter acronym
    /// (`I.`) gives back its period, longer ones duplicate it.
    Acronym,
}

/// One scanner rule: `head/context` in JFlex terms.
pub(super) struct Rule {
    pub(super) name: &'static str,
    /// Head followed by trailing context: decides the match length.
    whole: Regex,
    /// The head alone, when the rule has trailing context: the token.
    head: Option<Regex>,
    pub(super) action: Action,
}

/// The result of one scan step at a position.
#[derive(Debug, Clone, Copy)]
pub(super) struct Match {
    pub(super) rule: usize,
    /// Length of the head (the text the action sees), in bytes.
    pub(super) len: usize,
}

pub(super) struct Lexer {
    pub(super) rules: Vec<Rule>,
    /// All rules' `whole` patterns in one automaton: a single anchored pass
    /// says which rules match at a position at all, so only those are run
    /// for their match length.
    any: Regex,
}

/// JFlex macro definitions. Values may refer to other macros as `{NAME}`;
/// `{2,4}`-style quantifiers are left alone.
const MACROS: &[(&str, &str)] = &[
    ("SPACE", r"[ \t\u{A0}\u{2000}-\u{200A}\u{3000}]"),
    ("SPACES", r"{SPACE}+"),
    (
        "NEWLINE",
        r"\r\n|\r|\n|\u{2028}|\u{2029}|\u{B}|\u{C}|\u{85}",
    ),
    ("SPACENL", r"{SPACE}|{NEWLINE}"),
    ("SPACENLS", r"{SPACENL}+"),
    // Tags with space-separated attributes whose values are quoted; the
    // quoted value may run over a line end, as in the flex source.
    (
        "SGML",
        concat!(
            r#"<([!?][A-Za-z\-][^>\r\n]*|[A-Za-z][A-Za-z0-9_:.\-]*( +([A-Za-z][A-Za-z0-9_:.\-]*"#,
            r#"|[A-Za-z][A-Za-z0-9_:.\-]* *= *('[^']*'|"[^"]*")))* */?|/[A-Za-z][A-Za-z0-9_:.\-]*) *>"#
        ),
    ),
    (
        "SENTEND",
        r"{SPACENL}({SPACENL}|[\p{Lu}&&{JLETTER}]|{SGML})",
    ),
    (
        "SPMDASH",
        r"(?i:&(MD|mdash|ndash);)|[\u{96}\u{97}\u{2013}\u{2014}\u{2015}]",
    ),
    ("SPAMP", r"(?i:&amp;)"),
    ("SPPUNC", r"(?i:&(HT|TL|UR|LR|QC|QL|QR|odq|cdq|#[0-9]+);)"),
    ("SPLET", r"&[aeiouAEIOU](?i:acute|grave|uml);"),
    // Java's Character classes as JFlex 1.4 saw them: UTF-16 code units, so
    // nothing outside the Basic Multilingual Plane (a letter there arrives as
    // two untokenizable surrogates).
    // Letters and digits of the Unicode version the 3.4.1 scanner was built
    // with: today's minus those added since (found by running every BMP
    // character through the jar), plus two Mongolian letters that have since
    // become marks.
    (
        "JLETTER",
        r"[[[\p{L}\u{1885}\u{1886}]&&[\x00-\u{FFFF}]]--{UNICODE_SINCE_2014}]",
    ),
    (
        "JDIGIT",
        r"[[\p{Nd}&&[\x00-\u{FFFF}]]--{UNICODE_SINCE_2014}]",
    ),
    ("JALNUM", r"{JLETTER}|{JDIGIT}"),
    (
        "UNICODE_SINCE_2014",
        concat!(
            r"[\u{37F}\u{528}-\u{52F}\u{560}\u{588}\u{5EF}\u{860}-\u{86A}\u{870}-\u{887}",
            r"\u{889}-\u{88E}\u{8A1}\u{8AD}-\u{8C9}\u{978}\u{980}\u{9FC}\u{AF9}\u{C34}",
            r"\u{C5A}\u{C5D}\u{C80}\u{CDD}\u{D04}\u{D54}-\u{D56}\u{D5F}\u{DE6}-\u{DEF}",
            r"\u{E86}\u{E89}\u{E8C}\u{E8E}-\u{E93}\u{E98}\u{EA0}\u{EA8}-\u{EA9}\u{EAC}",
            r"\u{13F5}\u{13F8}-\u{13FD}\u{16F1}-\u{16F8}\u{170D}\u{171F}\u{1878}\u{191D}-\u{191E}",
            r"\u{19B0}-\u{19C0}\u{19C8}-\u{19C9}\u{1B4C}\u{1C80}-\u{1C8A}\u{1C90}-\u{1CBA}",
            r"\u{1CBD}-\u{1CBF}\u{1CF2}-\u{1CF3}\u{1CFA}\u{2C2F}\u{2C5F}\u{312E}-\u{312F}",
            r"\u{31BB}-\u{31BF}\u{4DB6}-\u{4DBF}\u{9FCD}-\u{9FFF}\u{A698}-\u{A69D}\u{A78F}",
            r"\u{A794}-\u{A79F}\u{A7AB}-\u{A7CD}\u{A7D0}-\u{A7D1}\u{A7D3}\u{A7D5}-\u{A7DC}",
            r"\u{A7F2}-\u{A7F7}\u{A8FD}-\u{A8FE}\u{A9E0}-\u{A9E4}\u{A9E6}-\u{A9FE}\u{AA7E}-\u{AA7F}",
            r"\u{AB30}-\u{AB5A}\u{AB5C}-\u{AB69}\u{AB70}-\u{ABBF}]",
        ),
    ),
    ("DIGIT", r"{JDIGIT}|[\u{7C0}-\u{7C9}]"),
    ("DATE", r"{DIGIT}{1,2}[\-/]{DIGIT}{1,2}[\-/]{DIGIT}{2,4}"),
    (
        "NUM",
        r"{DIGIT}+|{DIGIT}*([.:,\u{AD}\u{66B}\u{66C}]{DIGIT}+)+",
    ),
    ("NUMBER", r"[\-+]?{NUM}"),
    (
        "SUBSUPNUM",
        r"[\u{207A}\u{207B}\u{208A}\u{208B}]?([\u{2070}\u{B9}\u{B2}\u{B3}\u{2074}-\u{2079}]+|[\u{2080}-\u{2089}]+)",
    ),
    (
        "FRAC",
        r"({DIGIT}{1,4}[\- \u{A0}])?{DIGIT}{1,4}(\\?/|\u{2044}){DIGIT}{1,4}",
    ),
    ("FRAC2", r"[\u{BC}\u{BD}\u{BE}\u{2153}-\u{215E}]"),
    ("DOLSIGN", r"[A-Z]*\$|#"),
    (
        "DOLSIGN2",
        r"[\u{A2}\u{A3}\u{A4}\u{A5}\u{80}\u{20A0}\u{20AC}\u{60B}\u{E3F}\u{20A4}\u{FFE0}\u{FFE1}\u{FFE5}\u{FFE6}]",
    ),
    // [:letter:] is Java's Character.isLetter, i.e. general category L.
    (
        "LETTER",
        concat!(
            r"{JLETTER}|{SPLET}|[\u{AD}\u{237}-\u{24F}\u{2C2}-\u{2C5}\u{2D2}-\u{2DF}\u{2E5}-\u{2FF}",
            r"\u{300}-\u{36F}\u{370}-\u{37D}\u{384}\u{385}\u{3CF}\u{3F6}\u{3FC}-\u{3FF}\u{483}-\u{487}",
            r"\u{4CF}\u{4F6}-\u{4FF}\u{510}-\u{525}\u{55A}-\u{55F}\u{591}-\u{5BD}\u{5BF}\u{5C1}\u{5C2}",
            r"\u{5C4}\u{5C5}\u{5C7}\u{615}-\u{61A}\u{63B}-\u{63F}\u{64B}-\u{65E}\u{670}\u{6D6}-\u{6EF}",
            r"\u{6FA}-\u{6FF}\u{70F}\u{711}\u{730}-\u{74F}\u{750}-\u{77F}\u{7A6}-\u{7B1}\u{7CA}-\u{7F5}",
            r"\u{7FA}\u{900}-\u{903}\u{93C}\u{93E}-\u{94E}\u{951}-\u{955}\u{962}-\u{963}\u{981}-\u{983}",
            r"\u{9BC}-\u{9C4}\u{9C7}\u{9C8}\u{9CB}-\u{9CD}\u{9D7}\u{9E2}\u{9E3}\u{A01}-\u{A03}\u{A3C}",
            r"\u{A3E}-\u{A4F}\u{A81}-\u{A83}\u{ABC}-\u{ACF}\u{B82}\u{BBE}-\u{BC2}\u{BC6}-\u{BC8}",
            r"\u{BCA}-\u{BCD}\u{C01}-\u{C03}\u{C3E}-\u{C56}\u{D3E}-\u{D44}\u{D46}-\u{D48}\u{E30}-\u{E3A}",
            r"\u{E47}-\u{E4E}\u{EB1}-\u{EBC}\u{EC8}-\u{ECD}]"
        ),
    ),
    (
        "WORD",
        r"{LETTER}({LETTER}|{DIGIT})*([.!?]{LETTER}({LETTER}|{DIGIT})*)*",
    ),
    ("APOS", r"['\u{92}\u{2019}]|(?i:&apos;)"),
    ("APOSETCETERA", r"{APOS}|[`\u{91}\u{2018}\u{201B}]"),
    ("HYPHEN", r"[\-_\u{58A}\u{2010}\u{2011}]"),
    (
        "THING",
        r"([dDoOlL]{APOSETCETERA}{JALNUM})?{JALNUM}+({HYPHEN}([dDoOlL]{APOSETCETERA}{JALNUM})?{JALNUM}+)*",
    ),
    (
        "HTHING",
        r"[A-Za-z0-9][A-Za-z0-9.,\u{AD}]*(-([A-Za-z0-9\u{AD}]+|{ACRO2}\.))+",
    ),
    ("THINGA", r"[A-Z]+(([+\&]|{SPAMP})[A-Z]+)+"),
    (
        "THING3",
        r"[A-Za-z0-9]+(-[A-Za-z]+){0,2}(\\?/[A-Za-z0-9]+(-[A-Za-z]+){0,2}){1,2}",
    ),
    ("REDAUX", r"{APOS}([msdMSD]|(?i:re|ve|ll))"),
    ("SWORD", r"[A-Za-z\u{AD}]*[A-MO-Za-mo-z]\u{AD}*"),
    ("SREDAUX", r"(?i:n){APOSETCETERA}(?i:t)"),
    (
        "APOWORD",
        concat!(
            r"{APOS}(?i:n){APOS}?|[lLdDjJ]{APOS}|(?i:dunkin){APOS}|(?i:somethin){APOS}|(?i:ol){APOS}",
            r"|{APOS}(?i:em)|[A-HJ-XZn]{APOSETCETERA}{JLETTER}{2}{JLETTER}*|{APOS}[2-9]0(?i:s)|{APOS}(?i:till?)",
            r"|{JLETTER}{JLETTER}*[aeiouyAEIOUY]{APOSETCETERA}[aeiouA-Z]{JLETTER}*|{APOS}(?i:cause)",
            r"|(?i:cont'd\.?|nor'easter|c'mon|e'er|s'mores|ev'ry|li'l|nat'l)|(?i:o){APOSETCETERA}(?i:o)"
        ),
    ),
    ("APOWORD2", r"(?i:y){APOS}"),
    (
        "FULLURL",
        r#"(?i:https?)://[^ \t\n\f\r"<>|(){}]+[^ \t\n\f\r"<>|.!?(){},\-]"#,
    ),
    // `,-_` in the flex source is a character range (0x2C-0x5F), kept as such.
    (
        "LIKELYURL",
        concat!(
            r#"((?i:www)\.([^ \t\n\f\r"<>|.!?(){},]+\.)+[a-zA-Z]{2,4}"#,
            r#"|([^ \t\n\f\r"`'<>|.!?(){}\x2C-\x5F$]+\.)+(?i:com|net|org|edu))"#,
            r#"(/[^ \t\n\f\r"<>|()]+[^ \t\n\f\r"<>|.!?(){},\-])?"#
        ),
    ),
    (
        "EMAIL",
        concat!(
            r#"((?i:&lt;)|<)?[a-zA-Z0-9][^ \t\n\f\r"<>|(){}\u{A0}]*@([^ \t\n\f\r"<>|(){}.\u{A0}]+\.)*"#,
            r#"[^ \t\n\f\r"<>|(){}.\u{A0}]+((?i:&gt;)|>)?"#
        ),
    ),
    ("TWITTER", r"@[a-zA-Z_][a-zA-Z_0-9]*|#{LETTER}+"),
    (
        "FILENAME_EXT",
        concat!(
            r"(?i:bat|bmp|c|class|cgi|cpp|dll|doc|docx|exe|gif|gz|h|htm|html|jar|java|jpeg|jpg|mov|mp3",
            r"|pdf|php|pl|png|ppt|ps|py|sql|tar|txt|wav|x|xml|zip)"
        ),
    ),
    ("FILENAME", r"{JALNUM}+(\.{JALNUM}+)*\.{FILENAME_EXT}"),
    (
        "ABMONTH",
        r"(?i:Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec)",
    ),
    ("ABDAYS", r"(?i:Mon|Tue|Tues|Wed|Thu|Thurs|Fri)"),
    (
        "ABSTATE",
        concat!(
            r"(?i:Ala|Ariz)|A(?i:z)|A(?i:rk)|(?i:Calif|Colo|Conn|Ct|Dak)|D(?i:el)|(?i:Fla|Ga)|I(?i:ll)",
            r"|(?i:Ind|Kans?|Ky)|L(?i:a)|M(?i:ass)|(?i:Md|Mich|Minn)|M(?i:iss)|(?i:Mo|Mont|Neb|Nev|Okla)",
            r"|O(?i:re)|P(?i:a)|(?i:Penn|Tenn)|T(?i:ex)|(?i:Va|Vt)|W(?i:ash)|(?i:Wisc?|Wyo)"
        ),
    ),
    (
        "ABCOMP",
        r"(?i:Inc|Cos?|Corp)|(?i:Pp?t)[ye](?i:s?)|(?i:Ltd|Plc|Rt|Bancorp|Bhd|Assn|Univ|Intl|Sys)",
    ),
    ("ABCOMP2", r"(?i:Invt|Elec|Natl)|(?i:M)[ft](?i:g)|(?i:Dept)"),
    ("ABNUM", r"(?i:tel|est|ext|sq)"),
    ("ABPTIT", r"(?i:Jr|Sr|Bros|(Ed|Ph)\.D|Blvd|Rd|Esq)"),
    (
        "ABBREV1",
        r"({ABMONTH}|{ABDAYS}|{ABSTATE}|{ABCOMP}|{ABNUM}|{ABPTIT}|(?i:etc|al|seq|Bldg))\.",
    ),
    (
        "ACRO",
        r"[A-Za-z](\.[A-Za-z])*|(?i:Canada|Sino|Korean|EU|Japan|non)-(?i:U\.S)|(?i:U\.S\.-)(?i:U\.K|U\.S\.S\.R)",
    ),
    (
        "ACRO2",
        r"[A-Za-z](\.[A-Za-z])+|(?i:Canada|Sino|Korean|EU|Japan|non)-(?i:U\.S)|(?i:U\.S\.-)(?i:U\.K|U\.S\.S\.R)",
    ),
    (
        "ABTITLE",
        concat!(
            r"(?i:Mr|Mrs|Ms)|M(?i:iss)|(?i:Drs?|Profs?|Sens?|Reps?|Attys?|Lt|Col|Gen|Messrs|Govs?|Adm|Rev",
            r"|Maj|Sgt|Cpl|Pvt|Capt|Ste?|Ave|Pres|Lieut|Hon|Brig|Co?mdr|Pfc|Spc|Supts?|Det|Mt|Ft|Adj|Adv",
            r"|Asst|Assoc|Ens|Insp|Mlle|Mme|Msgr|Sfc)"
        ),
    ),
    (
        "ABBREV4",
        r"[A-Za-z]|{ABTITLE}|(?i:vs|Alex|Wm|Jos|Cie|a\.k\.a|cf|TREAS|Ph)|{ACRO}|{ABCOMP2}",
    ),
    ("ABBREV2", r"{ABBREV4}\."),
    // Abbreviations recognised only before a number ("fig. 3", "no. 5").
    ("ABBREV3", r"(?i:ca|figs?|prop|nos?|art|bldg|pp|op)\."),
    ("ACRONYM", r"{ACRO}\."),
    (
        "SENTSTART",
        // First letter case-sensitive (a character class in the flex source).
        concat!(
            r"A(?i:bout)|A(?i:ccording)|A(?i:dditionally)|A(?i:fter)|A(?i:n)|A|A(?i:s)|A(?i:t)",
            r"|B(?i:ut)|E(?i:arlier)|H(?i:e)|H(?i:er)|H(?i:ere)|H(?i:owever)|I(?i:f)|I(?i:n)",
            r"|I(?i:t)|L(?i:ast)|M(?i:any)|M(?i:ore)|M(?i:r)\.|M(?i:s)\.|N(?i:ow)|O(?i:nce)",
            r"|O(?i:ne)|O(?i:ther)|O(?i:ur)|S(?i:he)|S(?i:ince)|S(?i:o)|S(?i:ome)|S(?i:uch)",
            r"|T(?i:hat)|T(?i:he)|T(?i:heir)|T(?i:hen)|T(?i:here)|T(?i:hese)|T(?i:hey)|T(?i:his)|W(?i:e)",
            r"|W(?i:hen)|W(?i:hile)|W(?i:hat)|Y(?i:et)|Y(?i:ou)",
        ),
    ),
    (
        "PHONE",
        concat!(
            r"(\([0-9]{2,3}\)[ \u{A0}]?|(\+\+?)?([0-9]{2,4}[\- \u{A0}])?[0-9]{2,4}[\- \u{A0}])",
            r"[0-9]{3,4}[\- \u{A0}]?[0-9]{3,5}",
            r"|((\+\+?)?[0-9]{2,4}\.)?[0-9]{2,4}\.[0-9]{3,4}\.[0-9]{3,5}"
        ),
    ),
    ("FAKEDUCKFEET", r"<<|>>"),
    ("HYPHENS", r"\-+"),
    ("LDOTS", r"\.{3,5}|(\.[ \u{A0}]){2,4}\.|[\u{85}\u{2026}]"),
    ("FNMARKS", r"@+|#+|_+"),
    ("ASTS", r"\*+|(\\\*){1,3}"),
    ("INSENTP", r"[,;:\u{3001}]"),
    (
        "QUOTES",
        r"{APOS}|''|[`\u{2018}\u{2019}\u{201A}\u{201B}\u{201C}\u{201D}\u{91}\u{92}\u{93}\u{94}\u{201E}\u{201F}\u{2039}\u{203A}\u{AB}\u{BB}]{1,2}",
    ),
    ("DBLQUOT", r#""|(?i:&quot;)"#),
    (
        "TBSPEC",
        concat!(
            r"-(?i:RRB|LRB|RCB|LCB|RSB|LSB)-|(?i:C\.D\.s|pro-|anti-)|(?i:S)(&|{SPAMP})(?i:P-500)",
            r"|(?i:S)(&|{SPAMP})(?i:Ls)|(?i:Cap){APOS}(?i:n)|(?i:c){APOS}(?i:est)"
        ),
    ),
    ("TBSPEC2", r"{APOS}[0-9][0-9]"),
    ("SMILEY", r"[<>]?[:;=][\-o*']?[()DPdpO\\{@|\[\]]"),
    // The first alternative really is `[^x=~<>]` taken literally after `.`
    // (an unescaped-bracket slip in the flex source).
    (
        "ASIANSMILEY",
        concat!(
            r"[\^x=~<>]\.\[\^(?i:x)=\~<>\]|[\-\^x=\~<>']_[\-\^x=\~<>']",
            r"|\([\-\^x=\~<>'][_.]?[\-\^x=\~<>']\)|\([\^x=\~<>']-[\^x=\~<>'`]\)"
        ),
    ),
    (
        "MISCSYMBOL",
        concat!(
            r"[+%\&\~\^|\\\u{A6}\u{A7}\u{A8}\u{A9}\u{AC}\u{AE}\u{AF}\u{B0}-\u{B3}\u{B4}-\u{BA}\u{D7}\u{F7}",
            r"\u{387}\u{5BE}\u{5C0}\u{5C3}\u{5C6}\u{5F3}\u{5F4}\u{600}-\u{603}\u{606}-\u{60A}\u{60C}\u{614}",
            r"\u{61B}\u{61E}\u{66A}\u{66D}\u{703}-\u{70D}\u{7F6}\u{7F7}\u{7F8}\u{964}\u{965}\u{E4F}\u{1FBD}",
            r"\u{2016}\u{2017}\u{2020}-\u{2023}\u{2030}-\u{2038}\u{203B}\u{203E}-\u{2042}\u{2044}",
            r"\u{207A}-\u{207F}\u{208A}-\u{208E}\u{2100}-\u{214F}\u{2190}-\u{21FF}\u{2200}-\u{2BFF}\u{3012}",
            r"\u{30FB}\u{FF01}-\u{FF0F}\u{FF1A}-\u{FF20}\u{FF3B}-\u{FF40}\u{FF5B}-\u{FF65}]"
        ),
    ),
    ("PROGLANG", r"(?i:c)\+\+|(?i:c|f)#"),
    ("ASSIMILATIONS3", r"(?i:cannot)|'(?i:twas)"),
    (
        "ASSIMILATIONS2",
        r"'(?i:tis)|(?i:gonna|gotta|lemme|gimme|wanna)",
    ),
];

/// The rules in JFlex order: `(name, head, trailing context, action)`.
const RULES: &[(&str, &str, Option<&str>, Action)] = &[
    ("PROGLANG", "{PROGLANG}", None, Action::Keep),
    (
        "ASSIMILATIONS3",
        "{ASSIMILATIONS3}",
        None,
        Action::PushBack(3),
    ),
    (
        "ASSIMILATIONS2",
        "{ASSIMILATIONS2}",
        None,
        Action::PushBack(2),
    ),
    ("SGML", "{SGML}", None, Action::Nbsp),
    ("SPMDASH", "{SPMDASH}", None, Action::Replace("--")),
    ("SPAMP", "{SPAMP}", None, Action::Amp),
    ("SPPUNC", "{SPPUNC}", None, Action::Keep),
    (
        "WORD/REDAUX",
        "{WORD}",
        Some("{REDAUX}"),
        Action::SoftHyphens,
    ),
    (
        "SWORD/SREDAUX",
        "{SWORD}",
        Some("{SREDAUX}"),
        Action::SoftHyphens,
    ),
    ("WORD", "{WORD}", None, Action::SoftHyphens),
    ("APOWORD", "{APOWORD}", None, Action::Keep),
    ("APOWORD2", "{APOWORD2}", Some("{JLETTER}"), Action::Keep),
    ("FULLURL", "{FULLURL}", None, Action::Keep),
    ("LIKELYURL", "{LIKELYURL}", None, Action::Keep),
    ("EMAIL", "{EMAIL}", None, Action::Keep),
    ("TWITTER", "{TWITTER}", None, Action::Keep),
    (
        "REDAUX/",
        "{REDAUX}",
        Some("[^A-Za-z]"),
        Action::Quotes { left: false },
    ),
    ("SREDAUX", "{SREDAUX}", None, Action::Quotes { left: false }),
    ("DATE", "{DATE}", None, Action::Keep),
    ("NUMBER", "{NUMBER}", None, Action::SoftHyphens),
    ("SUBSUPNUM", "{SUBSUPNUM}", None, Action::Keep),
    ("FRAC", "{FRAC}", None, Action::Nbsp),
    ("FRAC2", "{FRAC2}", None, Action::Fraction),
    ("TBSPEC", "{TBSPEC}", None, Action::Amp),
    ("THING3", "{THING3}", None, Action::Keep),
    ("DOLSIGN", "{DOLSIGN}", None, Action::Keep),
    ("DOLSIGN2", "{DOLSIGN2}", None, Action::Currency),
    (
        "ACRONYM/SENTSTART",
        "{ACRONYM}",
        Some("{SPACENLS}({SENTSTART}|{SGML}){SPACENL}"),
        Action::Acronym,
    ),
    (
        "ABBREV3/DIGIT",
        "{ABBREV3}",
        Some("{SPACENL}?{JDIGIT}"),
        Action::Keep,
    ),
    (
        "ABBREV1/SENTEND",
        "{ABBREV1}",
        Some("{SENTEND}"),
        Action::DuplicatePeriod,
    ),
    // Any two characters after it: outranks a WORD such as "Inc.Q".
    ("ABBREV1/ANY2", "{ABBREV1}", Some("(?s:..)"), Action::Keep),
    // Only reached near the end of the text (the rule above needs two more
    // characters); the reference treats that as a sentence end.
    ("ABBREV1", "{ABBREV1}", None, Action::DuplicatePeriod),
    ("ABBREV2", "{ABBREV2}", None, Action::Keep),
    ("ABBREV4/SPACE", "{ABBREV4}", Some("{SPACE}"), Action::Keep),
    ("ACRO/SPACENL", "{ACRO}", Some("{SPACENL}"), Action::Keep),
    (
        "TBSPEC2/SPACENL",
        "{TBSPEC2}",
        Some("{SPACENL}"),
        Action::Keep,
    ),
    (
        "FILENAME/",
        "{FILENAME}",
        Some("{SPACENL}|[.?!,]"),
        Action::Keep,
    ),
    (
        "WORD./INSENTP",
        r"{WORD}\.",
        Some("{INSENTP}"),
        Action::SoftHyphens,
    ),
    ("PHONE", "{PHONE}", None, Action::Phone),
    (
        "DBLQUOT/",
        "{DBLQUOT}",
        Some(r"[A-Za-z0-9$]"),
        Action::Quotes { left: true },
    ),
    ("DBLQUOT", "{DBLQUOT}", None, Action::Quotes { left: false }),
    ("LESSTHAN", r"<|(?i:&lt;)", None, Action::Replace("<")),
    ("GREATERTHAN", r">|(?i:&gt;)", None, Action::Replace(">")),
    ("SMILEY/", "{SMILEY}", Some("[^A-Za-z0-9]"), Action::Smiley),
    ("ASIANSMILEY", "{ASIANSMILEY}", None, Action::Smiley),
    ("LCB", r"\{", None, Action::Replace("-LCB-")),
    ("RCB", r"\}", None, Action::Replace("-RCB-")),
    ("LSB", r"\[", None, Action::Replace("-LSB-")),
    ("RSB", r"\]", None, Action::Replace("-RSB-")),
    ("LRB", r"\(", None, Action::Replace("-LRB-")),
    ("RRB", r"\)", None, Action::Replace("-RRB-")),
    ("HYPHENS", "{HYPHENS}", None, Action::Dashes),
    ("LDOTS", "{LDOTS}", None, Action::Replace("...")),
    ("FNMARKS", "{FNMARKS}", None, Action::Keep),
    ("ASTS", "{ASTS}", None, Action::Keep),
    ("INSENTP", "{INSENTP}", None, Action::Keep),
    ("BANGS", "[?!]+", None, Action::Keep),
    (
        "PERIOD",
        r"[.\u{A1}\u{BF}\u{37E}\u{589}\u{61F}\u{6D4}\u{700}-\u{702}\u{7FA}\u{3002}]",
        None,
        Action::Keep,
    ),
    ("EQUALS", "=", None, Action::Keep),
    ("SLASH", "/", None, Action::Keep),
    (
        "HTHING./INSENTP",
        r"{HTHING}\.",
        Some("{INSENTP}"),
        Action::SoftHyphens,
    ),
    ("HTHING", "{HTHING}", None, Action::SoftHyphens),
    (
        "THING./INSENTP",
        r"{THING}\.",
        Some("{INSENTP}"),
        Action::Keep,
    ),
    ("THING", "{THING}", None, Action::Keep),
    (
        "THINGA./INSENTP",
        r"{THINGA}\.",
        Some("{INSENTP}"),
        Action::Amp,
    ),
    ("THINGA", "{THINGA}", None, Action::Amp),
    (
        "QUOTE/",
        "'",
        Some(r"[A-Za-z][^ \t\n\r\u{A0}]"),
        Action::Quotes { left: true },
    ),
    ("REDAUX", "{REDAUX}", None, Action::Quotes { left: false }),
    ("QUOTES", "{QUOTES}", None, Action::Quotes { left: false }),
    ("FAKEDUCKFEET", "{FAKEDUCKFEET}", None, Action::Keep),
    ("MISCSYMBOL", "{MISCSYMBOL}", None, Action::Keep),
    (
        "SPACES",
        r"\x00|{SPACES}|[\u{200B}\u{200E}\u{200F}\u{FEFF}]",
        None,
        Action::Skip,
    ),
    ("NEWLINE", "{NEWLINE}", None, Action::LineBreak),
    ("NBSP", r"(?i:&nbsp;)", None, Action::Skip),
    ("UNTOKENIZABLE", r"[^\n]", None, Action::Delete),
];

/// Expands `{NAME}` macro references (JFlex syntax) recursively, leaving
/// `{m,n}` quantifiers untouched. Each expansion is wrapped in a
/// non-capturing group so alternations inside a macro stay local, except a
/// macro that is one bracketed class, which is inserted as is so that it can
/// also be used inside another class (`[\p{Lu}&&{JLETTER}]`).
fn expand(pattern: &str, macros: &HashMap<&str, &str>) -> String {
    let mut out = String::with_capacity(pattern.len());
    let mut rest = pattern;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let close = after.find('}');
        let name = close.map(|c| &after[..c]);
        // `\p{L}`, `\u{A0}` and `\x{7F}` are regex escapes, not macros.
        let escape = ["\\p", "\\P", "\\u", "\\x"]
            .iter()
            .any(|e| out.ends_with(e));
        match name {
            Some(name)
                if !escape
                    && name.starts_with(|c: char| c.is_ascii_uppercase())
                    && name
                        .chars()
                        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_') =>
            {
                // Every macro referenced by the tables is defined above; a
                // typo is a programming error caught by the unit tests.
                let body = macros
                    .get(name)
                    .unwrap_or_else(|| panic!("PTB lexer macro {{{name}}} is not defined"));
                let body = expand(body, macros);
                if is_one_class(&body) {
                    out.push_str(&body);
                } else {
                    out.push_str("(?:");
                    out.push_str(&body);
                    out.push(')');
                }
                rest = &after[name.len() + 1..];
            }
            _ => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Whether `pattern` is a single bracketed character class, `[...]`.
fn is_one_class(pattern: &str) -> bool {
    if !pattern.starts_with('[') {
        return false;
    }
    let mut depth = 0usize;
    let mut chars = pattern.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => {
                chars.next();
            }
            '[' => depth += 1,
            ']' => {
                depth -= 1;
                if depth == 0 {
                    return i + 1 == pattern.len();
                }
            }
            _ => {}
        }
    }
    false
}

fn build_many(patterns: &[String]) -> Regex {
    // MatchKind::All + an anchored search reports the longest match at the
    // start position, which is JFlex's longest-match rule for one pattern
    // (and every matching pattern, for an overlapping search).
    Regex::builder()
        .configure(Regex::config().match_kind(MatchKind::All))
        .build_many(patterns)
        .unwrap_or_else(|e| panic!("PTB lexer rule does not compile: {e}\n{patterns:?}"))
}

fn build(pattern: &str) -> Regex {
    build_many(&[pattern.to_string()])
}

impl Lexer {
    /// Compiles the rule table. The patterns are constants, so a failure here
    /// is a bug in this file (the unit tests build the table).
    pub(super) fn new() -> Lexer {
        let macros: HashMap<&str, &str> = MACROS.iter().copied().collect();
        let mut wholes = Vec::with_capacity(RULES.len());
        let rules = RULES
            .iter()
            .map(|&(name, head, context, action)| {
                let head_re = expand(head, &macros);
                let (whole, head) = match context {
                    None => (head_re, None),
                    Some(context) => {
                        let whole = format!("(?:{head_re})(?:{})", expand(context, &macros));
                        (whole, Some(build(&head_re)))
                    }
                };
                let rule = Rule {
                    name,
                    whole: build(&whole),
                    head,
                    action,
                };
                wholes.push(whole);
                rule
            })
            .collect();
        Lexer {
            rules,
            any: build_many(&wholes),
        }
    }

    /// The rule that fires at byte offset `pos` of `text`: the longest match
    /// (trailing context included), the earliest rule on ties. Always `Some`
    /// before the end of the text: the last rule matches any character but
    /// `\n`, and NEWLINE matches that.
    pub(super) fn next_match(&self, text: &str, pos: usize) -> Option<Match> {
        let input = Input::new(text).range(pos..).anchored(Anchored::Yes);
        let mut matching = PatternSet::new(self.rules.len());
        self.any.which_overlapping_matches(&input, &mut matching);
        let mut best: Option<(usize, usize)> = None; // (rule, whole length)
                                                     // PatternSet iterates in pattern (= rule) order, so on equal lengths
                                                     // the earlier rule stays.
        for i in matching.iter().map(|p| p.as_usize()) {
            let rule = &self.rules[i];
            if let Some(m) = rule.whole.search_half(&input) {
                let len = m.offset() - pos;
                if len > 0 && best.is_none_or(|(_, best_len)| len > best_len) {
                    best = Some((i, len));
                }
            }
        }
        let (rule, whole_len) = best?;
        let len = match &self.rules[rule].head {
            None => whole_len,
            Some(head) => {
                let head_input = Input::new(text)
                    .range(pos..pos + whole_len)
                    .anchored(Anchored::Yes);
                head.search_half(&head_input)
                    .map_or(whole_len, |m| m.offset() - pos)
            }
        };
        Some(Match { rule, len })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The process-wide lexer: building one is slow in debug builds.
    fn lexer() -> &'static Lexer {
        &super::super::shared().lexer
    }

    #[test]
    fn every_rule_compiles() {
        assert_eq!(lexer().rules.len(), RULES.len());
    }

    #[test]
    fn longest_match_wins_and_ties_go_to_the_earlier_rule() {
        let lexer = lexer();
        let name = |text: &str| {
            let m = lexer.next_match(text, 0).expect("a rule matches");
            (lexer.rules[m.rule].name, m.len)
        };
        // "cannot" is also a WORD of the same length: the earlier rule wins.
        assert_eq!(name("cannot go"), ("ASSIMILATIONS3", 6));
        // WORD/REDAUX counts the 's towards the length but returns "man".
        assert_eq!(name("man's dog"), ("WORD/REDAUX", 3));
        assert_eq!(name("well-known"), ("HTHING", 10));
    }

    #[test]
    fn macro_expansion_leaves_quantifiers_alone() {
        let macros: HashMap<&str, &str> = [("D", "[0-9]")].into_iter().collect();
        assert_eq!(expand("{D}{1,2}x", &macros), "[0-9]{1,2}x");
        assert_eq!(expand(r"\p{L}\u{A0}{D}", &macros), r"\p{L}\u{A0}[0-9]");
        let macros: HashMap<&str, &str> = [("A", "a|b"), ("C", r"[a\]]")].into_iter().collect();
        assert_eq!(expand("{A}[x{C}]", &macros), r"(?:a|b)[x[a\]]]");
    }
}
