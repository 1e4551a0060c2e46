//! The `sentencepiece` library's own encoding of a BPE model, restated from
//! its source (google/sentencepiece, commit 2734490): `Normalizer::Normalize`
//! (`src/normalizer.cc`) with the model's `normalizer_spec`, then
//! `bpe::Model::SampleEncode` without dropout (`src/bpe_model.cc`), then the
//! byte fallback and unknown-run merging of
//! `SentencePieceProcessor::PopulateSentencePieceText`
//! (`src/sentencepiece_processor.cc`).
//!
//! In short: spaces become `▁` and one `▁` is put in front (the dummy
//! prefix, always, whatever the text starts with); the text is split into
//! characters (a user-defined piece stays whole and never merges); the
//! adjacent pair whose concatenation is the highest-scoring piece is merged
//! (the leftmost on a tie) until no pair is a piece; a piece that is not in
//! the vocabulary becomes its UTF-8 bytes (`<0xE2>`...) with byte fallback,
//! or `<unk>` (one per run of unknown pieces) without.
//!
//! The normaliser applies the model's precompiled character map (empty in
//! LLaMA-family models, NFKC in `nmt_nfkc` ones): a double-array trie
//! (darts-clone's `commonPrefixSearch`, `third_party/darts_clone/darts.h`)
//! whose longest match at each position is replaced by its mapping.
use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::ops::Range;

use super::{
    check_bpe, BuildError, ModelProto, PIECE_BYTE, PIECE_CONTROL, PIECE_NORMAL, PIECE_UNKNOWN,
    PIECE_UNUSED, PIECE_USER_DEFINED,
};

/// One encoded piece: its id and the byte range of the input it covers
/// (empty for all but the last byte piece of a character, as SentencePiece
/// reports them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    pub id: u32,
    pub range: Range<usize>,
}

/// A SentencePiece BPE model, encoding as `SentencePieceProcessor.encode`.
#[derive(Debug, Clone)]
pub struct SentencePieceBpe {
    pieces: Vec<String>,
    scores: Vec<f32>,
    kinds: Vec<i32>,
    /// NORMAL, USER_DEFINED and UNUSED pieces (`pieces_`): what merges reach.
    normal: HashMap<String, u32>,
    /// CONTROL, UNKNOWN and BYTE pieces (`reserved_id_map_`).
    reserved: HashMap<String, u32>,
    unk_id: u32,
    /// User-defined pieces, matched whole (longest first) before anything.
    user_defined: Vec<String>,
    byte_fallback: bool,
    /// The normaliser's character map; `None` for the identity.
    charsmap: Option<CharsMap>,
    add_dummy_prefix: bool,
    remove_extra_whitespaces: bool,
    escape_whitespaces: bool,
    treat_whitespace_as_suffix: bool,
}

const SPACE_SYMBOL: &str = "▁";

/// A symbol of the BPE loop: a byte range of the normalised text, linked to
/// its neighbours (`-1` at either end); an emptied symbol was merged away.
#[derive(Debug, Clone)]
struct Symbol {
    prev: isize,
    next: isize,
    freeze: bool,
    start: usize,
    end: usize,
}

/// A candidate merge. Ordered as bpe_model.cc's `SymbolPairComparator`:
/// the higher score first, then the leftmost.
#[derive(Debug)]
struct SymbolPair {
    left: usize,
    right: usize,
    score: f32,
    size: usize,
}

impl PartialEq for SymbolPair {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for SymbolPair {}
impl PartialOrd for SymbolPair {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for SymbolPair {
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.left.cmp(&self.left))
    }
}

impl SentencePieceBpe {
    /// Reads a BPE `tokenizer.model`.
    pub fn from_file(path: &std::path::Path) -> Result<Self, super::SentencePieceError> {
        let (proto, _) = super::read_model(path)?;
        Self::from_proto(&proto).map_err(|e| e.at(path))
    }

    /// Builds the encoder of a decoded `tokenizer.model`, checking what
    /// `ModelInterface::InitializePieces` checks.
    pub(crate) fn from_proto(proto: &ModelProto) -> Result<Self, BuildError> {
        let trainer = check_bpe(proto)?;
        let defaults = super::NormalizerSpec::default();
        let spec = proto.normalizer_spec.as_ref().unwrap_or(&defaults);
        let charsmap = match spec.precompiled_charsmap.as_deref() {
            None | Some([]) => None,
            Some(blob) => Some(CharsMap::decode(blob).ok_or_else(|| {
                BuildError::Normalizer(spec.name.clone().unwrap_or_else(|| "(unnamed)".into()))
            })?),
        };
        let byte_fallback = trainer.byte_fallback.unwrap_or(false);
        let mut model = SentencePieceBpe {
            pieces: Vec::with_capacity(proto.pieces.len()),
            scores: Vec::with_capacity(proto.pieces.len()),
            kinds: Vec::with_capacity(proto.pieces.len()),
            normal: HashMap::new(),
            reserved: HashMap::new(),
            unk_id: 0,
            user_defined: Vec::new(),
            byte_fallback,
            charsmap,
            add_dummy_prefix: spec.add_dummy_prefix.unwrap_or(true),
            remove_extra_whitespaces: spec.remove_extra_whitespaces.unwrap_or(true),
            escape_whitespaces: spec.escape_whitespaces.unwrap_or(true),
            treat_whitespace_as_suffix: trainer.treat_whitespace_as_suffix.unwrap_or(false),
        };
        let mut unk = None;
        let mut bytes_found = [false; 256];
        for (i, p) in proto.pieces.iter().enumerate() {
            let id = u32::try_from(i)
                .map_err(|_| BuildError::Invalid("it has more than 2^32 pieces".into()))?;
            let piece = p.piece.clone().unwrap_or_default();
            if piece.is_empty() {
                return Err(BuildError::Invalid(format!("piece {id} is empty")));
            }
            let kind = p.r#type.unwrap_or(PIECE_NORMAL);
            let map = match kind {
                PIECE_NORMAL | PIECE_USER_DEFINED | PIECE_UNUSED => &mut model.normal,
                _ => &mut model.reserved,
            };
            if map.insert(piece.clone(), id).is_some() {
                return Err(BuildError::Invalid(format!(
                    "piece {piece:?} is defined twice"
                )));
            }
            match kind {
                PIECE_USER_DEFINED => model.user_defined.push(piece.clone()),
                PIECE_UNKNOWN if unk.is_some() => {
                    return Err(BuildError::Invalid("it has two unknown pieces".into()))
                }
                PIECE_UNKNOWN => unk = Some(id),
                PIECE_BYTE => {
                    if !byte_fallback {
                        return Err(BuildError::Invalid(format!(
                            "byte piece {piece} although byte_fallback is false"
                        )));
                    }
                    let byte = piece_to_byte(&piece).ok_or_else(|| {
                        BuildError::Invalid(format!("byte piece {piece} is invalid"))
                    })?;
                    bytes_found[usize::from(byte)] = true;
                }
                _ => {}
            }
            model.pieces.push(piece);
            model.scores.push(p.score.unwrap_or(0.0));
            model.kinds.push(kind);
        }
        model.unk_id = unk.ok_or_else(|| BuildError::Invalid("it has no unknown piece".into()))?;
        if byte_fallback && bytes_found.contains(&false) {
            return Err(BuildError::Invalid(
                "byte_fallback is true but it lacks some of the 256 byte pieces".into(),
            ));
        }
        // PrefixMatcher takes the longest match; trying longer ones first
        // gives the same.
        model
            .user_defined
            .sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        Ok(model)
    }

    /// The number of pieces.
    pub fn len(&self) -> usize {
        self.pieces.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pieces.is_empty()
    }

    /// The piece of `id`.
    pub fn id_to_piece(&self, id: u32) -> Option<&str> {
        self.pieces.get(id as usize).map(String::as_str)
    }

    /// The id of `piece` as `PieceToId` finds it (control, unknown and
    /// byte pieces first), or `None` where SentencePiece would say unknown.
    pub fn piece_to_id(&self, piece: &str) -> Option<u32> {
        self.reserved
            .get(piece)
            .or_else(|| self.normal.get(piece))
            .copied()
    }

    /// The unknown piece's id.
    pub fn unk_id(&self) -> u32 {
        self.unk_id
    }

    /// Whether the model's normaliser adds the dummy `▁` prefix.
    pub fn adds_dummy_prefix(&self) -> bool {
        self.add_dummy_prefix
    }

    /// `SentencePieceProcessor.encode(text)` with the model's own
    /// normaliser spec.
    pub fn encode(&self, text: &str) -> Vec<Piece> {
        self.encode_with_prefix(text, self.add_dummy_prefix)
    }

    /// [`SentencePieceBpe::encode`] with `add_dummy_prefix` overridden, as
    /// transformers' non-legacy `LlamaTokenizer` loads the model.
    pub fn encode_with_prefix(&self, text: &str, add_dummy_prefix: bool) -> Vec<Piece> {
        let (normalized, norm_to_orig) = self.normalize(text, add_dummy_prefix);
        if normalized.is_empty() {
            return Vec::new();
        }
        let merged = self.merge(&normalized);
        self.populate(&normalized, &norm_to_orig, &merged)
    }

    /// The longest user-defined piece `text` starts with, or its first
    /// character (`PrefixMatcher::PrefixMatch`): (length, matched).
    fn prefix_match(&self, text: &str) -> (usize, bool) {
        if let Some(found) = self
            .user_defined
            .iter()
            .find(|u| text.starts_with(u.as_str()))
        {
            return (found.len(), true);
        }
        (text.chars().next().map_or(0, char::len_utf8), false)
    }

    /// `Normalizer::NormalizePrefix`: what the start of `input` becomes,
    /// and how many bytes of it that consumes. A user-defined piece stays as
    /// it is; else the longest match of the character map is replaced; else
    /// one character stays.
    fn normalize_prefix<'a>(&'a self, input: &'a str) -> (&'a str, usize) {
        let (len, user_defined) = self.prefix_match(input);
        if user_defined {
            return (&input[..len], len);
        }
        if let Some((matched, replacement)) = self
            .charsmap
            .as_ref()
            .and_then(|map| map.longest_prefix(input))
        {
            return (replacement, matched);
        }
        (&input[..len], len)
    }

    /// `Normalizer::Normalize`: the normalised text and, for each of its
    /// bytes and one past the end, the input byte it came from.
    fn normalize(&self, text: &str, add_dummy_prefix: bool) -> (String, Vec<usize>) {
        let mut input = text;
        if input.is_empty() {
            return (String::new(), Vec::new());
        }
        let mut consumed = 0;
        if self.remove_extra_whitespaces {
            while !input.is_empty() {
                let (normalized, len) = self.normalize_prefix(input);
                if normalized != " " {
                    break;
                }
                input = &input[len..];
                consumed += len;
            }
            if input.is_empty() {
                return (String::new(), Vec::new());
            }
        }
        let mut out = String::with_capacity(input.len() * 3);
        let mut map = Vec::with_capacity(input.len() * 3 + 1);
        let space = if self.escape_whitespaces {
            SPACE_SYMBOL
        } else {
            " "
        };
        let add_ws = |out: &mut String, map: &mut Vec<usize>, at: usize| {
            out.push_str(space);
            map.extend(std::iter::repeat_n(at, space.len()));
        };
        if !self.treat_whitespace_as_suffix && add_dummy_prefix {
            add_ws(&mut out, &mut map, consumed);
        }
        let mut is_prev_space = self.remove_extra_whitespaces;
        while !input.is_empty() {
            let (mut sp, len) = self.normalize_prefix(input);
            while is_prev_space && sp.starts_with(' ') {
                sp = &sp[1..];
            }
            if !sp.is_empty() {
                for ch in sp.chars() {
                    if self.escape_whitespaces && ch == ' ' {
                        out.push_str(SPACE_SYMBOL);
                        map.extend(std::iter::repeat_n(consumed, SPACE_SYMBOL.len()));
                    } else {
                        out.push(ch);
                        map.extend(std::iter::repeat_n(consumed, ch.len_utf8()));
                    }
                }
                is_prev_space = sp.ends_with(' ');
            }
            consumed += len;
            input = &input[len..];
            if !self.remove_extra_whitespaces {
                is_prev_space = false;
            }
        }
        if self.remove_extra_whitespaces {
            while out.ends_with(space) {
                let length = out.len() - space.len();
                consumed = map[length];
                out.truncate(length);
                map.truncate(length);
            }
        }
        if self.treat_whitespace_as_suffix && add_dummy_prefix {
            add_ws(&mut out, &mut map, consumed);
        }
        map.push(consumed);
        (out, map)
    }

    /// `bpe::Model::SampleEncode` (no dropout): the merged pieces as
    /// (byte range of `normalized`, id).
    fn merge(&self, normalized: &str) -> Vec<(Range<usize>, u32)> {
        let mut symbols: Vec<Symbol> = Vec::with_capacity(normalized.len());
        let mut at = 0;
        while at < normalized.len() {
            let (len, freeze) = self.prefix_match(&normalized[at..]);
            let index = symbols.len() as isize;
            symbols.push(Symbol {
                prev: index - 1,
                next: if at + len >= normalized.len() {
                    -1
                } else {
                    index + 1
                },
                freeze,
                start: at,
                end: at + len,
            });
            at += len;
        }

        let mut agenda: BinaryHeap<SymbolPair> = BinaryHeap::new();
        // The two pieces an UNUSED piece was merged from, to split it back.
        let mut rev_merge: HashMap<&str, (Range<usize>, Range<usize>)> = HashMap::new();
        let mut maybe_add =
            |symbols: &[Symbol], agenda: &mut BinaryHeap<SymbolPair>, left: isize, right: isize| {
                if left < 0 || right < 0 {
                    return;
                }
                let (l, r) = (&symbols[left as usize], &symbols[right as usize]);
                if l.freeze || r.freeze {
                    return;
                }
                let piece = &normalized[l.start..r.end];
                let Some(&id) = self.normal.get(piece) else {
                    return;
                };
                agenda.push(SymbolPair {
                    left: left as usize,
                    right: right as usize,
                    score: self.scores[id as usize],
                    size: piece.len(),
                });
                if self.kinds[id as usize] == PIECE_UNUSED {
                    rev_merge.insert(piece, (l.start..l.end, r.start..r.end));
                }
            };

        for i in 1..symbols.len() {
            maybe_add(&symbols, &mut agenda, i as isize - 1, i as isize);
        }
        while let Some(top) = agenda.pop() {
            let (l, r) = (&symbols[top.left], &symbols[top.right]);
            if l.start == l.end
                || r.start == r.end
                || (l.end - l.start) + (r.end - r.start) != top.size
            {
                continue;
            }
            let right_next = r.next;
            let right_end = r.end;
            symbols[top.left].end = right_end;
            symbols[top.left].next = right_next;
            if right_next >= 0 {
                symbols[right_next as usize].prev = top.left as isize;
            }
            let right = &mut symbols[top.right];
            right.end = right.start;
            let prev = symbols[top.left].prev;
            maybe_add(&symbols, &mut agenda, prev, top.left as isize);
            maybe_add(&symbols, &mut agenda, top.left as isize, right_next);
        }

        let mut output = Vec::new();
        let mut index: isize = 0;
        while index >= 0 {
            let s = &symbols[index as usize];
            self.resegment(normalized, s.start..s.end, &rev_merge, &mut output);
            index = s.next;
        }
        output
    }

    /// Splits an UNUSED piece back into the pieces it was merged from.
    fn resegment(
        &self,
        normalized: &str,
        range: Range<usize>,
        rev_merge: &HashMap<&str, (Range<usize>, Range<usize>)>,
        output: &mut Vec<(Range<usize>, u32)>,
    ) {
        let piece = &normalized[range.clone()];
        let id = self.piece_to_id(piece).unwrap_or(self.unk_id);
        if self.kinds[id as usize] != PIECE_UNUSED {
            output.push((range, id));
            return;
        }
        let Some((left, right)) = rev_merge.get(piece) else {
            output.push((range, id));
            return;
        };
        // The halves are those of the merge first recorded, at another
        // place perhaps; only their lengths carry over.
        let split = range.start + (left.end - left.start);
        debug_assert_eq!(split + (right.end - right.start), range.end);
        self.resegment(normalized, range.start..split, rev_merge, output);
        self.resegment(normalized, split..range.end, rev_merge, output);
    }

    /// `PopulateSentencePieceText`: ids with input ranges; unknown pieces
    /// become bytes with byte fallback, and runs of them one `<unk>`
    /// without.
    fn populate(
        &self,
        normalized: &str,
        norm_to_orig: &[usize],
        merged: &[(Range<usize>, u32)],
    ) -> Vec<Piece> {
        let mut out: Vec<Piece> = Vec::with_capacity(merged.len());
        let mut consumed = 0;
        let mut is_prev_unk = false;
        for (range, id) in merged {
            let kind = self.kinds[*id as usize];
            let is_unk = kind == PIECE_UNKNOWN;
            if kind == PIECE_CONTROL {
                let at = norm_to_orig[consumed];
                out.push(Piece {
                    id: *id,
                    range: at..at,
                });
            } else {
                let (begin, end) = (norm_to_orig[range.start], norm_to_orig[range.end]);
                if is_unk && self.byte_fallback {
                    let bytes = normalized[range.clone()].as_bytes();
                    for (i, byte) in bytes.iter().enumerate() {
                        let id = self.piece_to_id(&byte_piece(*byte)).unwrap_or(self.unk_id);
                        let last = i + 1 == bytes.len();
                        out.push(Piece {
                            id,
                            range: begin..if last { end } else { begin },
                        });
                    }
                } else if is_unk && is_prev_unk {
                    if let Some(previous) = out.last_mut() {
                        previous.range.end = end;
                    }
                } else {
                    out.push(Piece {
                        id: *id,
                        range: begin..end,
                    });
                }
                consumed += range.end - range.start;
            }
            is_prev_unk = is_unk;
        }
        out
    }
}

/// `<0xAB>` for byte 0xAB, as `ByteToPiece` writes it.
fn byte_piece(byte: u8) -> String {
    format!("<0x{byte:02X}>")
}

/// The byte of a `<0xAB>` piece.
fn piece_to_byte(piece: &str) -> Option<u8> {
    let hex = piece.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

/// A precompiled character map (`normalizer.cc`,
/// `DecodePrecompiledCharsMap`): a little-endian u32 trie size, the
/// darts-clone double array, then the NUL-terminated replacements.
#[derive(Debug, Clone)]
struct CharsMap {
    units: Vec<u32>,
    normalized: Vec<u8>,
}

impl CharsMap {
    fn decode(blob: &[u8]) -> Option<CharsMap> {
        let size = u32::from_le_bytes(blob.get(..4)?.try_into().ok()?) as usize;
        let body = &blob[4..];
        if size >= body.len() || size % 4 != 0 {
            return None;
        }
        let units = body[..size]
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        Some(CharsMap {
            units,
            normalized: body[size..].to_vec(),
        })
    }

    /// The longest key `input` starts with (`commonPrefixSearch`, then the
    /// longest result): its length and its replacement.
    fn longest_prefix(&self, input: &str) -> Option<(usize, &str)> {
        let offset = |unit: u32| (unit >> 10) << ((unit & (1 << 9)) >> 6);
        let label = |unit: u32| unit & ((1 << 31) | 0xFF);
        let has_leaf = |unit: u32| (unit >> 8) & 1 == 1;
        let value = |unit: u32| unit & ((1 << 31) - 1);
        let mut node = offset(*self.units.first()?) as usize;
        let mut longest = None;
        for (i, &byte) in input.as_bytes().iter().enumerate() {
            node ^= usize::from(byte);
            let Some(&unit) = self.units.get(node) else {
                break;
            };
            if label(unit) != u32::from(byte) {
                break;
            }
            node ^= offset(unit) as usize;
            if has_leaf(unit) {
                let Some(&leaf) = self.units.get(node) else {
                    break;
                };
                longest = Some((i + 1, value(leaf) as usize));
            }
        }
        // A key ends on a character boundary in any sound map; one that
        // does not is ignored rather than cutting a character.
        let (len, at) = longest.filter(|&(len, _)| input.is_char_boundary(len))?;
        let tail = self.normalized.get(at..)?;
        let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
        Some((len, std::str::from_utf8(&tail[..end]).ok()?))
    }
}
