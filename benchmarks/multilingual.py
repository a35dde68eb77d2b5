"""Per-language retrieval on Tux Paint: an aligner trained on English captions only vs one
trained on the captions of every listed language, both tested per language on the same held-out
images (the split of configs/demo.yaml: by image, 70/10/20, seed 0; every stamp has its English
caption, so the split does not depend on the languages). Text -> image R@1 (percent) per
language, over the test images that have a caption in it, against all 190 test images.

    python benchmarks/multilingual.py --text use-multilingual --aligner cca \
        --languages fr de es ja [--cache cache]
"""

from __future__ import annotations

import argparse

from xmodal.align.registry import build_aligner
from xmodal.data.languages import SOURCE_LANGUAGE, caption_language
from xmodal.data.loaders import load_dataset
from xmodal.embeddings import Embedded
from xmodal.encoders.registry import build_image_encoder, build_text_encoder
from xmodal.experiments.pipeline import EmbeddedDataset, embed_dataset
from xmodal.retrieval.evaluate import evaluate
from xmodal.store import EmbeddingStore

SPLIT = {"train": 0.7, "val": 0.1, "test": 0.2}


def in_language(data: EmbeddedDataset, languages: set[str]) -> Embedded:
    """All images of `data`, and only its captions in `languages`."""
    rows = [j for j, c in enumerate(data.dataset.captions) if caption_language(c.id) in languages]
    return Embedded(data.images, data.texts[rows], data.dataset.caption_image[rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", default="effnet-lite0")
    parser.add_argument("--text", default="use-multilingual")
    parser.add_argument("--aligner", default="cca", help="a training-free kind: cca, ridge")
    parser.add_argument("--languages", nargs="+", required=True)
    parser.add_argument("--cache", default="cache")
    args = parser.parse_args()
    languages = [SOURCE_LANGUAGE, *(lang for lang in args.languages if lang != SOURCE_LANGUAGE)]
    dataset = load_dataset("tuxpaint", languages=languages)
    encoders = build_image_encoder(args.image), build_text_encoder(args.text)
    data = embed_dataset(dataset, *encoders, EmbeddingStore(args.cache), progress=True)
    splits = data.split(SPLIT, seed=0)
    trained = {
        "en": build_aligner(args.aligner).fit(in_language(splits["train"], {SOURCE_LANGUAGE})),
        "all": build_aligner(args.aligner).fit(in_language(splits["train"], set(languages))),
    }
    print(f"{args.image} + {args.text}, {args.aligner}: text -> image R@1 on test (%)")
    print(f"{'language':<12} {'captions':>8} {'train en':>9} {'train all':>9}")
    for lang in languages:
        test = in_language(splits["test"], {lang})
        r1 = [evaluate(a.transform(test), a.scorer(), (1,))["t2i_R@1"] for a in trained.values()]
        print(f"{lang:<12} {len(test.texts):>8} {r1[0]:>9.1f} {r1[1]:>9.1f}")


if __name__ == "__main__":
    main()
