"""Which model screens an instance, decided from its header alone: CT images go to the
CT model, frontal (PA/AP) CR and DX radiographs to the X-ray model; everything else is
accepted (a PACS push never fails over it) but recorded as not screened, with the reason.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from models.readers.dicom import DicomTags

CT_IMAGE_STORAGE = {
    "1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage
    "1.2.840.10008.5.1.4.1.1.2.1",  # Enhanced CT Image Storage
}
XRAY_IMAGE_STORAGE = {
    "1.2.840.10008.5.1.4.1.1.1",  # Computed Radiography Image Storage
    "1.2.840.10008.5.1.4.1.1.1.1",  # Digital X-Ray Image Storage - For Presentation
    "1.2.840.10008.5.1.4.1.1.1.1.1",  # Digital X-Ray Image Storage - For Processing
}
FRONTAL_VIEWS = {"PA", "AP"}
# A body part that says the image is not of the chest; absent or empty is taken as chest.
CHEST_PARTS = {
    "",
    "CHEST",
    "THORAX",
    "LUNG",
    "LUNGS",
    "CHEST_TO_PELVIS",
    "CHESTABDOMEN",
    "CHESTABDPELVIS",
    "WHOLEBODY",
    "TORSO",
}
OTHER_KINDS = {
    "SR": "a structured report, not an image",
    "PR": "a presentation state, not an image",
    "SEG": "a segmentation, not an image",
    "KO": "a key object selection, not an image",
}


class Route(NamedTuple):
    modality: str | None  # "ct", "xray", or None: not screened
    reason: str | None  # why not screened


def route(tags: DicomTags) -> Route:
    """Where an instance goes, from its SOP class and a few header fields."""
    sop_class_uid = tags.sop_class_uid
    modality = (tags.modality or "").strip().upper()
    body = (tags.body_part or "").strip().upper().replace(" ", "")
    if sop_class_uid in CT_IMAGE_STORAGE:
        if "LOCALIZER" in {t.strip().upper() for t in tags.image_type}:
            return Route(None, "CT localizer (scout) image, not a slice")
        if body not in CHEST_PARTS:
            return Route(None, f"CT of body part {body}, not the chest")
        return Route("ct", None)
    if sop_class_uid in XRAY_IMAGE_STORAGE:
        if body not in CHEST_PARTS:
            return Route(None, f"radiograph of body part {body}, not the chest")
        view = (tags.view_position or "").strip().upper()
        if view in FRONTAL_VIEWS:
            return Route("xray", None)
        if not view:
            return Route(
                None, "radiograph without ViewPosition: only frontal (PA, AP) views are screened"
            )
        return Route(None, f"{view} view: only frontal (PA, AP) radiographs are screened")
    if modality in OTHER_KINDS:
        return Route(None, OTHER_KINDS[modality])
    return Route(
        None,
        f"modality {modality or 'unknown'} (SOP class {sop_class_uid}) is not "
        "screened: only CT images and CR/DX radiographs are",
    )
