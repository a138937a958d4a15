"""aio-reid: AIO multimodal person re-identification for Hugging Face transformers.

Importing this package registers `model_type="aio"` with AutoConfig, AutoModel, AutoImageProcessor and
AutoProcessor, and marks the classes for `auto_map` so saved checkpoints also load with `trust_remote_code=True`.
"""

from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoProcessor

from processing_aio import AIOImageProcessor, AIOProcessor

from .checkpoint.locate import resolve_model
from .configuration_aio import DEFAULT_ATTRIBUTE_WORDS, IMAGE_MODALITIES, MODALITIES, AIOConfig
from .modeling_aio import AIOForReIdentification, AIOModel, AIOModelOutput, AIOPreTrainedModel, AIOReIdOutput

AutoConfig.register("aio", AIOConfig, exist_ok=True)
AutoModel.register(AIOConfig, AIOModel, exist_ok=True)
AutoImageProcessor.register(AIOConfig, slow_image_processor_class=AIOImageProcessor, exist_ok=True)
AutoProcessor.register(AIOConfig, AIOProcessor, exist_ok=True)

AIOConfig.register_for_auto_class()
AIOModel.register_for_auto_class("AutoModel")
AIOImageProcessor.register_for_auto_class("AutoImageProcessor")
AIOProcessor.register_for_auto_class("AutoProcessor")

__all__ = [
    "AIOConfig",
    "AIOModel",
    "AIOForReIdentification",
    "AIOPreTrainedModel",
    "AIOModelOutput",
    "AIOReIdOutput",
    "AIOImageProcessor",
    "AIOProcessor",
    "MODALITIES",
    "IMAGE_MODALITIES",
    "DEFAULT_ATTRIBUTE_WORDS",
    "resolve_model",
]
