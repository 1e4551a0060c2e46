//! The connector (paper Sec. 3.1): one two-layer MLP, shared by image tokens
//! and region features, that projects vision features into the word-embedding
//! space of the language decoder, with LLaVA's `mm_projector` tensor names.
