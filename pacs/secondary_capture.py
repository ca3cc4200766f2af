"""The heat map of one screened image as a DICOM Secondary Capture (highdicom), so a
radiologist sees in the PACS viewer, beside the original, where the model looked.

The picture is the Grad-CAM overlay that ScanQ already renders (models.gradcam.overlay:
the heat map over the image at its own size), enlarged when small so that text stays
legible, with a black band above it carrying "Research use only, not for diagnostic
use" and one below with the image's probability, label, threshold and
out-of-distribution flag: burned into the pixels, since a viewer may show nothing
else. The same words are in the header (Image Comments, Derivation Description), the
Burned In Annotation flag says so, and the Source Image Sequence points at the
screened image."""

from __future__ import annotations

import highdicom as hd
import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset

from pacs.results import MANUFACTURER, RESEARCH_ONLY, SC_SERIES_NUMBER, ImageResult, StudyResults

MIN_WIDTH = 512  # narrower pictures are enlarged to this width before the text goes on
MARGIN = 6
TEXT_COLOUR = (255, 255, 255)
BAND_COLOUR = (0, 0, 0)
# Default patient orientations (row, column direction) by what was screened, when the
# screened image's header did not give one: axial CT and a frontal chest radiograph.
DEFAULT_ORIENTATION = {"ct": ("L", "P"), "xray": ("L", "F")}


def result_line(image: ImageResult, model_version: str) -> str:
    """The one line of a heat map's lower band (and of its Image Comments)."""
    if image.probability is None:
        return f"{MANUFACTURER} {model_version}: not scored"
    parts = [f"{MANUFACTURER} {model_version}: p={image.probability:.3f}"]
    if image.label:
        parts.append(image.label)
    if image.threshold is not None:
        parts.append(f"threshold {image.threshold:.3f}")
    if image.out_of_distribution:
        parts.append("OUT OF DISTRIBUTION")
    return ", ".join(parts)


def _font_to_fit(draw: ImageDraw.ImageDraw, text: str, width: int) -> ImageFont.FreeTypeFont:
    """Pillow's bundled font at the largest size (from width/24 down) that fits."""
    size = max(10, width // 24)
    while True:
        font = ImageFont.load_default(size=size)
        if size <= 8 or draw.textlength(text, font=font) <= width - 2 * MARGIN:
            return font
        size -= 1


def burn_in(picture: np.ndarray, top: str, bottom: str) -> np.ndarray:
    """An RGB picture (H, W, 3) uint8 with a text band added above and below it."""
    img = Image.fromarray(np.ascontiguousarray(picture, dtype=np.uint8), mode="RGB")
    if img.width < MIN_WIDTH:
        scale = MIN_WIDTH / img.width
        img = img.resize((MIN_WIDTH, max(1, round(img.height * scale))),
                         Image.Resampling.BILINEAR)  # fmt: skip
    probe = ImageDraw.Draw(img)
    fonts = [_font_to_fit(probe, text, img.width) for text in (top, bottom)]
    bands = [f.getbbox("Ag")[3] + 2 * MARGIN for f in fonts]
    out = Image.new("RGB", (img.width, img.height + sum(bands)), BAND_COLOUR)
    out.paste(img, (0, bands[0]))
    draw = ImageDraw.Draw(out)
    draw.text((MARGIN, MARGIN), top, font=fonts[0], fill=TEXT_COLOUR)
    draw.text((MARGIN, bands[0] + img.height + MARGIN), bottom, font=fonts[1], fill=TEXT_COLOUR)
    return np.asarray(out, dtype=np.uint8)


def _source_reference(image: ImageResult) -> Dataset:
    ref = Dataset()
    ref.ReferencedSOPClassUID = image.sop_class_uid
    ref.ReferencedSOPInstanceUID = image.sop_instance_uid
    if image.frame:
        ref.ReferencedFrameNumber = image.frame
    return ref


def build_secondary_capture(
    results: StudyResults, image: ImageResult, overlay: np.ndarray, instance_number: int = 1
) -> hd.sc.SCImage:
    """The heat map picture of `image` (`overlay`: RGB (H, W, 3) uint8, the heat map over
    the image) as a Secondary Capture in the results' SC series; its SOP Instance UID is
    results.sc_instance_uid(image)."""
    overlay = np.asarray(overlay)
    if overlay.ndim != 3 or overlay.shape[2] != 3 or overlay.dtype != np.uint8:
        raise ValueError(
            f"overlay must be RGB uint8 (H, W, 3), got {overlay.dtype} {overlay.shape}"
        )
    line = result_line(image, results.model_version)
    pixels = burn_in(overlay, RESEARCH_ONLY, line)
    header = results.header
    orientation = image.patient_orientation or DEFAULT_ORIENTATION.get(results.modality, ("L", "F"))
    sc = hd.sc.SCImage(
        pixel_array=pixels,
        photometric_interpretation="RGB",
        bits_allocated=8,
        coordinate_system="PATIENT",
        study_instance_uid=header.study_uid,
        series_instance_uid=results.sc_series_uid,
        series_number=SC_SERIES_NUMBER,
        sop_instance_uid=results.sc_instance_uid(image),
        instance_number=instance_number,
        manufacturer=MANUFACTURER,
        patient_id=header.patient_id,
        patient_name=header.patient_name or None,
        patient_birth_date=header.patient_birth_date,
        patient_sex=header.patient_sex or None,
        accession_number=header.accession,
        study_id=header.study_id,
        study_date=header.study_date or None,
        study_time=header.study_time or None,
        referring_physician_name=header.referring_physician or None,
        patient_orientation=orientation,
        series_description=f"ScanQ heat maps ({RESEARCH_ONLY})"[:64],
    )
    if header.specific_character_set:
        sc.SpecificCharacterSet = header.specific_character_set
    sc.BurnedInAnnotation = "YES"
    sc.ImageComments = f"{RESEARCH_ONLY}. {line}"
    sc.DerivationDescription = (
        f"Grad-CAM heat map of the ScanQ model over the screened image. {RESEARCH_ONLY}."
    )
    sc.SourceImageSequence = [_source_reference(image)]
    sc.ConversionType = "WSD"  # made by a workstation (software), not digitised
    return sc
