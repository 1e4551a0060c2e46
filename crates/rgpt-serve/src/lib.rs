//! Serving: an HTTP API over the assembled model that answers region prompts
//! (image, regions of any shape, text with `<region>` placeholders), streaming
//! tokens as they are generated.
