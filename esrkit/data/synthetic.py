"""A deterministic synthetic beauty catalogue: the embedded default dataset (no download, no API key).

It is built to exercise what LLM-ESR is about, so results on it mean something:

* items have Amazon-2014-style metadata (title, brand, price, category path, description) generated from a
  category tree, brands with a price tier and a specialty, and attributes (skin type, scent, finish, ...);
* item popularity is long-tailed (a lognormal "appeal" raised to a power) and most users are short;
* users prefer a few sub-categories, one attribute value and a price tier, and move through complementary
  product types in order (cleanser -> toner -> moisturiser), so a sequential model has signal to learn;
* the preference signal is visible in the text (a tail item shares words with the head items its fans buy), so
  semantic embeddings can help exactly where collaborative signal is scarce.

Everything comes from one ``numpy`` Generator seeded by ``seed``: the same options give byte-identical data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from esrkit.data.sequences import SequenceData

# category -> sub-category -> product types (in the order a routine uses them)
CATALOGUE: dict[str, dict[str, list[str]]] = {
    "Skin Care": {
        "Face": ["Cleanser", "Toner", "Serum", "Moisturizer", "Sunscreen"],
        "Eyes": ["Eye Cream", "Eye Serum", "Eye Mask"],
        "Treatments": ["Exfoliator", "Face Mask", "Spot Treatment"],
    },
    "Makeup": {
        "Face": ["Primer", "Foundation", "Concealer", "Setting Powder", "Blush"],
        "Eyes": ["Eye Primer", "Eyeshadow Palette", "Eyeliner", "Mascara"],
        "Lips": ["Lip Liner", "Lipstick", "Lip Gloss"],
    },
    "Hair Care": {
        "Shampoo & Conditioner": ["Shampoo", "Conditioner", "Hair Mask"],
        "Styling": ["Heat Protectant", "Styling Cream", "Hair Spray"],
    },
    "Nails": {
        "Nail Polish": ["Base Coat", "Nail Polish", "Top Coat"],
        "Nail Care": ["Cuticle Oil", "Nail File"],
    },
    "Fragrance": {"Women's": ["Eau de Parfum", "Body Mist"], "Men's": ["Eau de Toilette", "Aftershave"]},
    "Bath & Body": {
        "Bath": ["Body Wash", "Bath Bomb", "Body Scrub"],
        "Body Care": ["Body Lotion", "Hand Cream"],
    },
}

ATTRIBUTES: dict[str, list[str]] = {
    "concern": ["sensitive skin", "oily skin", "dry skin", "anti-aging", "acne-prone skin", "dull skin"],
    "scent": ["lavender", "vanilla", "citrus", "rose", "unscented", "coconut", "sandalwood"],
    "finish": ["matte", "dewy", "satin", "shimmer", "natural"],
}
ADJECTIVES = [
    "Gentle",
    "Ultra",
    "Hydrating",
    "Daily",
    "Radiant",
    "Pure",
    "Intense",
    "Soft",
    "Velvet",
    "Clear",
]
SYLLABLES = ["lu", "ma", "ve", "ra", "so", "ki", "na", "el", "to", "ri", "za", "bel", "mi", "or", "ta", "lin"]
SIZES = ["1 oz", "1.7 oz", "3.4 fl oz", "8 fl oz", "0.5 oz", "12 ml", "250 ml"]


@dataclass(frozen=True)
class SyntheticOptions:
    n_users: int = 2000
    n_items: int = 1000
    n_brands: int = 40
    mean_extra_length: float = 4.5  # sequence length = 3 + lognormal extra (most users short)
    max_length: int = 80
    popularity_power: float = 1.2  # larger = heavier head
    routine_prob: float = 0.55  # chance the next item is the next step of the current routine
    brand_loyalty: float = 0.35
    noise_prob: float = 0.08  # chance of a random popular item
    seed: int = 2024


def _brand_names(rng: np.random.Generator, n: int) -> list[str]:
    names: set[str] = set()
    while len(names) < n:
        k = rng.integers(2, 4)
        names.add("".join(rng.choice(SYLLABLES, size=k)).capitalize())
    return sorted(names)


def _make_items(rng: np.random.Generator, opt: SyntheticOptions) -> tuple[list[dict], np.ndarray, np.ndarray]:
    """Items with metadata, plus (n_items, 3) int codes: product-type index, attribute-value index, brand
    index."""
    types = [(cat, sub, t) for cat, subs in CATALOGUE.items() for sub, ts in subs.items() for t in ts]
    attr_values = [(k, v) for k, vs in ATTRIBUTES.items() for v in vs]
    brands = _brand_names(rng, opt.n_brands)
    brand_tier = rng.integers(0, 3, size=opt.n_brands)  # 0 budget, 1 mid, 2 luxury
    brand_home = rng.integers(0, len(CATALOGUE), size=opt.n_brands)
    cats = list(CATALOGUE)
    items, codes = [], np.zeros((opt.n_items, 3), dtype=np.int64)
    for i in range(opt.n_items):
        b = int(rng.integers(opt.n_brands))
        # brands mostly sell in their home category
        cat = cats[brand_home[b]] if rng.random() < 0.75 else cats[int(rng.integers(len(cats)))]
        choices = [j for j, (c, _, _) in enumerate(types) if c == cat]
        t = int(rng.choice(choices))
        a = int(rng.integers(len(attr_values)))
        codes[i] = (t, a, b)
        cat, sub, ptype = types[t]
        key, value = attr_values[a]
        tier = int(brand_tier[b])
        price = round(float(np.exp(rng.normal(2.2 + 0.8 * tier, 0.35))), 2)
        if key == "concern":
            title = f"{brands[b]} {rng.choice(ADJECTIVES)} {ptype} for {value.title()} - {rng.choice(SIZES)}"
        else:  # scent and finish read naturally before the product type
            title = f"{brands[b]} {rng.choice(ADJECTIVES)} {value.title()} {ptype} - {rng.choice(SIZES)}"
        desc = (
            f"A {('budget-friendly', 'mid-range', 'luxury')[tier]} {ptype.lower()} from {brands[b]}. "
            f"Made for {value}"
            + (" lovers" if key == "scent" else "")
            + f"; part of a {sub.lower()} routine."
        )
        attrs = {
            "title": title,
            "brand": brands[b] if rng.random() > 0.05 else None,  # some brands missing, as in real data
            "price": price if rng.random() > 0.15 else None,
            "categories": [["Beauty", cat, sub, ptype]],
            "description": desc if rng.random() > 0.1 else None,
        }
        items.append(attrs)
    return items, codes, brand_tier


def generate(opt: SyntheticOptions | None = None) -> SequenceData:
    opt = opt or SyntheticOptions()
    rng = np.random.default_rng(opt.seed)
    items, codes, brand_tier = _make_items(rng, opt)
    n_types = int(codes[:, 0].max()) + 1
    n_attr = int(codes[:, 1].max()) + 1
    appeal = np.exp(rng.normal(0.0, 1.0, size=opt.n_items)) ** opt.popularity_power
    type_items = [np.flatnonzero(codes[:, 0] == t) for t in range(n_types)]
    # routine: the next step within the same sub-category list
    types = [(c, s, t) for c, subs in CATALOGUE.items() for s, ts in subs.items() for t in ts]
    next_type = np.array(
        [j + 1 if j + 1 < n_types and types[j + 1][:2] == types[j][:2] else j for j in range(n_types)]
    )

    extra = np.exp(rng.normal(np.log(opt.mean_extra_length), 1.0, size=opt.n_users))
    lengths = np.minimum(3 + np.floor(extra).astype(int), opt.max_length)
    sequences = []
    for u in range(opt.n_users):
        fav_types = rng.choice(n_types, size=3, replace=False)
        fav_attr = int(rng.integers(n_attr))
        tier = int(rng.integers(0, 3))
        weight = (
            appeal * (1.0 + 4.0 * (codes[:, 1] == fav_attr)) * (1.0 + 1.5 * (brand_tier[codes[:, 2]] == tier))
        )
        seq: list[int] = []
        current_type = int(rng.choice(fav_types))
        last_brand = -1
        while len(seq) < lengths[u]:
            r = rng.random()
            if r < opt.noise_prob:
                pool = np.arange(opt.n_items)
            else:
                if seq and r < opt.noise_prob + opt.routine_prob and next_type[current_type] != current_type:
                    current_type = int(next_type[current_type])  # the next step of the routine
                else:
                    current_type = int(rng.choice(fav_types))
                pool = type_items[current_type]
                if pool.size == 0:
                    pool = np.arange(opt.n_items)
            w = weight[pool].copy()
            if last_brand >= 0 and rng.random() < opt.brand_loyalty:
                w *= 1.0 + 6.0 * (codes[pool, 2] == last_brand)
            if seq:
                w[np.isin(pool, seq[-3:])] *= 0.05  # rarely rebuy the last few items
            item = int(rng.choice(pool, p=w / w.sum()))
            seq.append(item + 1)
            last_brand = int(codes[item, 2])
        sequences.append(seq)
    return SequenceData.from_sequences(
        sequences,
        n_items=opt.n_items,
        user_ids=[f"U{u + 1:06d}" for u in range(opt.n_users)],
        item_ids=[f"I{i + 1:06d}" for i in range(opt.n_items)],
        item_attrs=items,
        name="synthetic-beauty",
        meta={"source": "synthetic", "options": opt.__dict__},
    )
