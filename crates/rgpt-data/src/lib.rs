//! Training and evaluation data (paper Sec. 3.2-3.3): readers for LLaVA
//! captions, Visual Genome, RefCOCOg, V3Det and COCO, the conversion of their
//! annotations into region conversations with task-guided prompts, and the
//! RecapD region-caption pipeline.
