"""The model card's Markdown for the shortcut report (models.lung.shortcut), apart
from the code that measures it so models.card can render it without importing that."""

from __future__ import annotations

SECTION_HEADING = "\n## Shortcut report: does the model read the lungs?\n"


def render_shortcut_section(section: dict) -> str:
    """The model card's Markdown for a `shortcut` section."""

    def cell(name: str) -> str:
        lo, hi = section[f"{name}_ci95"]
        return f"{section[name]:.3f} [{lo:.3f}, {hi:.3f}]"

    return (
        f"{SECTION_HEADING}\n"
        f"AUC on this version's {section['n']} test images ({section['n_patients']} "
        "patients) [95% CI, patient bootstrap], with the lungs found by ScanQ's lung "
        "segmenter (models/default/lung; they cover "
        f"{section['lung_fraction']:.0%} of the image on average):\n\n"
        "| images | AUC |\n|---|---|\n"
        f"| as they are | {cell('auc')} |\n"
        f"| lungs hidden (filled with their own mean grey) | {cell('auc_lungs_hidden')} |\n"
        f"| only the lungs (the rest black) | {cell('auc_lungs_only')} |\n\n"
        + _cropped(section.get("lung_crop"))
        + "A model that reads disease from the lungs loses its skill when they are hidden "
        f"and keeps most of it when only they remain. Here {section['reading']}.\n"
    )


def _cropped(margin) -> str:
    """A lung-crop version's views: altered on the whole image, then cut as it scores."""
    if not margin:
        return ""
    return (
        "This version sees lung fields: each view was made on the whole image, then cut to "
        f"the whole image's lung box widened by {margin:.0%} of the side, as it is scored. "
    )
