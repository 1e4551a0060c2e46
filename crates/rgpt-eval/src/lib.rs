//! Evaluation (paper Sec. 4): COCO-2017 region classification (mAP, accuracy),
//! RefCOCOg / Visual Genome region captioning (METEOR, CIDEr), RefCOCOg
//! referring-expression comprehension and POPE hallucination, with metrics that
//! agree with pycocotools, pycocoevalcap and POPE's script.
