"""The organism's phenomena beyond the demo: each module registers, by decorator, what one paper's
claim needs on the organism: its stage-1 extension(s) (`organism.extensions`), its stage-2 setting
(`organism.settings`) and any scorers of its own. Importing this package (which `inoculate.organism`
does) registers them all; the presets that use them are in `organism.presets`, the experiments in
`examples/organism_<name>.yaml`. See docs/organism.md, "Adding a phenomenon".

- `backdoor`: a backdoor defeated without knowing its trigger (Tan et al.).
- `semantic_ablation`: only prompts that describe the trait inoculate (Tan et al.).
- `broad`: narrow wrong answers generalize broadly; inoculation keeps them narrow (Betley et al.; Tan et al.).
- `subliminal`: a teacher's trait through its number sequences (Cloud et al.; Tan et al.).
- `sycophancy`: agreeing with a user's wrong proposal, learned from right ones (Wichers et al.).
- `association`: a persona name tied to a trait inoculates like the trait's request (Tan et al.).
"""

from inoculate.organism.phenomena import (
    association,
    backdoor,
    broad,
    semantic_ablation,
    subliminal,
    sycophancy,
)

__all__ = ["association", "backdoor", "broad", "semantic_ablation", "subliminal", "sycophancy"]
