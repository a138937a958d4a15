"""Pre-processing of AIO queries: images per modality and captions."""

from .image_processing_aio import AIOImageProcessor, ImageInputError, convert_modality, load_image
from .processing_aio import AIOProcessor

__all__ = ["AIOImageProcessor", "AIOProcessor", "ImageInputError", "load_image", "convert_modality"]
