"""The detectors: ImageNet-pretrained MobileNetV2 and ResNet50 with the report's heads.

Both take ``(size, size, 3)`` images with values in 0..255 and output P(fake). The backbone
is a nested model named ``backbone``; layers before it are augmentation and preprocessing,
layers after it the classification head (see :func:`model_parts`).

ImageNet weights are found offline first (``$FAKEFACE_WEIGHTS``, the Keras cache,
``../shared/weights``), then downloaded; where neither works the backbone falls back to
random initialisation with a loud warning that the run records (:class:`WeightsInfo`).

Fine-tuning (:func:`prepare_finetune`) unfreezes the top of the backbone but keeps every
BatchNormalization layer frozen (``trainable = False``). With Keras 3, calling the
backbone with ``training=False`` is not enough: once the outer model trains, the
BatchNormalization statistics drift and the model collapses to one class at test time.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import keras
from keras import layers

from helpers.block_taps import with_block_taps
from helpers.config import DEFAULT_IMAGE_SIZE, weights_search_dirs

ARCHITECTURES = {
    "mobilenetv2": dict(
        constructor=keras.applications.MobileNetV2, preprocess="tf",
        files=["mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{rows}_no_top.h5",
               "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"]),
    "resnet50": dict(
        constructor=keras.applications.ResNet50, preprocess="caffe",
        files=["resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"]),
    "mobilenet": dict(  # MobileNet V1, the seed project's ELA detector
        constructor=keras.applications.MobileNet, preprocess="tf",
        files=["mobilenet_1_0_{rows}_tf_no_top.h5"]),
    "inceptionresnetv2": dict(  # the InceptionResNet that Keras ships (V1/VGGFace2 has no Keras weights)
        constructor=keras.applications.InceptionResNetV2, preprocess="tf",
        files=["inception_resnet_v2_weights_tf_dim_ordering_tf_kernels_notop.h5"]),
}
# InceptionResnetV1 pretrained on VGGFace2 (the seed's face-recognition backbone) is published as
# PyTorch weights (facenet-pytorch) and as a keras-facenet download; neither can be had offline,
# and Keras has no InceptionResnetV1 builder, so it is not offered here (see the README).
BACKBONE_NAME = "backbone"


@dataclass
class WeightsInfo:
    """Where a backbone's weights came from: ``local`` file, ``download`` or ``none`` (random)."""

    arch: str
    source: str
    path: str = ""
    warning: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


@keras.saving.register_keras_serializable(package="fakeface")
class ImagenetPreprocess(layers.Layer):  # pragma: no mutate block (mutmut's trampolines break Keras layers)
    """Map 0..255 RGB to a backbone's expected input: ``tf`` -> [-1, 1], ``caffe`` -> BGR minus mean."""

    def __init__(self, mode: str = "tf", **kwargs) -> None:
        super().__init__(**kwargs)
        if mode not in ("tf", "caffe"):
            raise ValueError(f"unknown preprocessing mode {mode!r}")
        self.mode = mode

    def call(self, inputs):
        if self.mode == "tf":
            return inputs / 127.5 - 1.0
        bgr = keras.ops.flip(inputs, axis=-1)
        return bgr - keras.ops.convert_to_tensor([103.939, 116.779, 123.68], dtype=inputs.dtype)

    def get_config(self) -> dict:
        return {**super().get_config(), "mode": self.mode}


def _rows_for(image_size: int) -> int:
    return image_size if image_size in (96, 128, 160, 192, 224) else 224  # sizes Keras publishes


def find_local_weights(arch: str, image_size: int = 224) -> Path | None:
    """The first offline ImageNet weight file for ``arch`` in the search folders, or None."""
    names = [f.format(rows=_rows_for(image_size)) for f in ARCHITECTURES[arch]["files"]]
    for folder in weights_search_dirs():
        if folder.is_file() and folder.name in names:
            return folder
        for name in names:
            if (folder / name).is_file():
                return folder / name
    return None


def build_backbone(arch: str, image_size: int, weights: str | None = "imagenet",
                   name: str = BACKBONE_NAME) -> tuple[keras.Model, WeightsInfo]:
    """The backbone without top, with weights resolved offline-first (see module docstring)."""
    spec = ARCHITECTURES[arch]
    shape = (image_size, image_size, 3)
    make = spec["constructor"]
    if weights != "imagenet":
        info = WeightsInfo(arch, "none" if weights is None else "local", str(weights or ""))
        return make(include_top=False, weights=weights, input_shape=shape, name=name), info
    local = find_local_weights(arch, image_size)
    if local is not None:
        return (make(include_top=False, weights=str(local), input_shape=shape, name=name),
                WeightsInfo(arch, "local", str(local)))
    try:
        return (make(include_top=False, weights="imagenet", input_shape=shape, name=name),
                WeightsInfo(arch, "download"))
    except Exception as exc:  # offline: the download fails with a URL error
        message = (f"NO IMAGENET WEIGHTS for {arch}: none found offline in "
                   f"{[str(d) for d in weights_search_dirs()]} and the download failed "
                   f"({type(exc).__name__}: {str(exc)[:160]}). The backbone is RANDOMLY INITIALISED "
                   f"(weights=None); its results are not those of an ImageNet-pretrained {arch}.")
        warnings.warn(message, RuntimeWarning, stacklevel=2)
        print("WARNING:", message)
        return (make(include_top=False, weights=None, input_shape=shape, name=name),
                WeightsInfo(arch, "none", warning=message))


def augmentation_layers(seed: int = 42, kind: str = "full") -> keras.Sequential:
    """Training-only augmentation: ``full`` = horizontal flip, small rotation and zoom; ``flip`` =
    horizontal flip only (what the frozen-feature cache reproduces exactly)."""
    steps = [layers.RandomFlip("horizontal", seed=seed)]
    if kind == "full":
        steps += [layers.RandomRotation(0.05, seed=seed), layers.RandomZoom(0.1, seed=seed)]
    elif kind != "flip":
        raise ValueError(f"augmentation must be 'full' or 'flip', not {kind!r}")
    return keras.Sequential(steps, name="augmentation")


RESIDUAL_GAIN = 20.0


def residual_branch(x, seed: int = 42, widths: tuple[int, ...] = (16, 32, 64, 64, 128)):
    """A noise-residual branch on preprocessed images: the image minus its 3x3 local mean (a fixed
    high-pass filter that removes most content and keeps pixel-level noise and resampling traces),
    then five stride-2 ReLU convolutions down to the backbone's 1/32 grid. The residual is scaled by
    ``RESIDUAL_GAIN`` (its standard deviation is 0.025-0.065 on the sample's 128-px images, in the
    [-1, 1] range of the preprocessed input) so the branch starts at the scale of the backbone's
    features. No BatchNormalization: the branch trains from scratch, and frozen placeholder
    statistics would stay placeholders."""
    smooth = layers.AveragePooling2D(3, strides=1, padding="same", name="local_mean")(x)
    y = layers.Subtract(name="noise_residual")([x, smooth])
    y = layers.Rescaling(RESIDUAL_GAIN, name="residual_gain")(y)
    for i, width in enumerate(widths, start=1):
        y = layers.Conv2D(width, 3, strides=2, padding="same", activation="relu", name=f"residual_conv_{i}",
                          kernel_initializer=keras.initializers.HeNormal(seed=seed + 10 + i))(y)
    return y


def with_residual_branch(base: keras.Model, image_size: int, seed: int = 42) -> keras.Model:
    """``base`` and :func:`residual_branch` side by side in one nested model named ``backbone``, their
    feature maps concatenated (so pooling, head, fine-tuning and serving see one backbone). The
    pretrained ``base`` starts frozen; the new branch trains from the head stage on."""
    inputs = keras.Input((image_size, image_size, 3), name="preprocessed")
    merged = layers.Concatenate(name="features")([base(inputs), residual_branch(inputs, seed)])
    combined = keras.Model(inputs, merged, name=BACKBONE_NAME)
    combined.trainable = True
    base.trainable = False
    return combined


def _pooled_backbone(arch: str, image_size: int, weights: str | None, augment: bool | str, seed: int,
                     residual: bool = False, block_taps: bool = False):
    """Input -> augmentation -> preprocessing -> frozen backbone (with a residual branch beside it when
    ``residual``; reading intermediate blocks too when ``block_taps``) -> global average pooling."""
    if residual and block_taps:
        raise ValueError("a residual branch and block taps are separate candidates: choose one")
    base, info = build_backbone(arch, image_size, weights, name=arch if residual or block_taps else BACKBONE_NAME)
    base.trainable = False
    if block_taps:
        base = with_block_taps(base, BACKBONE_NAME)
        base.trainable = False
    if residual:
        base = with_residual_branch(base, image_size, seed)
    inputs = keras.Input((image_size, image_size, 3), name="image")
    kind = augment if isinstance(augment, str) else "full"
    x = augmentation_layers(seed, kind)(inputs) if augment else inputs
    x = ImagenetPreprocess(ARCHITECTURES[arch]["preprocess"], name="preprocess")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(base(x))
    return inputs, x, info


def report_head(x, dropout: float = 0.2, l2: float = 1e-4, dense_units: tuple[int, ...] = (256, 128, 64),
                seed: int = 42):
    """The report's MobileNetV2 head on pooled features: Dense+ReLU (L2) and Dropout per layer, sigmoid.

    Initial weights are seeded per layer, so the same head starts from the same weights whether
    it sits on a backbone or on cached features (see :func:`build_head`).
    """
    for i, units in enumerate(dense_units, start=1):
        x = layers.Dense(units, activation="relu", kernel_regularizer=keras.regularizers.L2(l2),
                         kernel_initializer=keras.initializers.GlorotUniform(seed=seed + i), name=f"dense_{i}")(x)
        x = layers.Dropout(dropout, seed=seed, name=f"dropout_{i}")(x)
    return layers.Dense(1, activation="sigmoid", dtype="float32",  # float32 output under mixed precision
                        kernel_initializer=keras.initializers.GlorotUniform(seed=seed),
                        name="prediction")(x)


def resnet_head(x, hidden_units: int = 512, seed: int = 42):
    """The report's ResNet50 head: Dense 512 ReLU, sigmoid (seeded initial weights)."""
    x = layers.Dense(hidden_units, activation="relu", kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 1),
                     name="dense_1")(x)
    return layers.Dense(1, activation="sigmoid", dtype="float32",  # float32 output under mixed precision
                        kernel_initializer=keras.initializers.GlorotUniform(seed=seed),
                        name="prediction")(x)


FEATURE_WIDTH = {"mobilenetv2": 1280, "resnet50": 2048, "mobilenet": 1024, "inceptionresnetv2": 1536}


def build_head(arch: str, dropout: float = 0.2, l2: float = 1e-4, hidden_units: int = 512,
               seed: int = 42) -> keras.Model:
    """The detector's head alone, on pooled features: identical layers, names and initial weights
    to the head of :func:`build_detector` ``(arch, …)``; used to train on cached features."""
    inputs = keras.Input((FEATURE_WIDTH[arch],), name="features")
    if arch == "resnet50":
        return keras.Model(inputs, resnet_head(inputs, hidden_units, seed), name=f"{arch}_head")
    return keras.Model(inputs, report_head(inputs, dropout, l2, seed=seed), name=f"{arch}_head")


def build_mobilenetv2(image_size: int = DEFAULT_IMAGE_SIZE, dropout: float = 0.2, l2: float = 1e-4,
                      dense_units: tuple[int, ...] = (256, 128, 64), augment: bool | str = True,
                      weights: str | None = "imagenet", seed: int = 42,
                      residual: bool = False, block_taps: bool = False) -> tuple[keras.Model, WeightsInfo]:
    """MobileNetV2 detector: augmentation, frozen base, GAP, three Dense+ReLU (Dropout, L2), sigmoid;
    ``residual``: a noise-residual branch beside the base (:func:`with_residual_branch`); ``block_taps``:
    intermediate blocks pooled beside the last map (:func:`helpers.block_taps.with_block_taps`)."""
    inputs, x, info = _pooled_backbone("mobilenetv2", image_size, weights, augment, seed, residual, block_taps)
    outputs = report_head(x, dropout, l2, dense_units, seed)
    return keras.Model(inputs, outputs, name="mobilenetv2_detector"), info


def build_resnet50(image_size: int = DEFAULT_IMAGE_SIZE, hidden_units: int = 512, augment: bool | str = True,
                   weights: str | None = "imagenet", seed: int = 42) -> tuple[keras.Model, WeightsInfo]:
    """ResNet50 detector: frozen base, GAP, Dense 512 ReLU, sigmoid."""
    inputs, x, info = _pooled_backbone("resnet50", image_size, weights, augment, seed)
    return keras.Model(inputs, resnet_head(x, hidden_units, seed), name="resnet50_detector"), info


def build_transfer(arch: str, image_size: int = DEFAULT_IMAGE_SIZE, dropout: float = 0.2, l2: float = 1e-4,
                   augment: bool | str = True, weights: str | None = "imagenet",
                   seed: int = 42) -> tuple[keras.Model, WeightsInfo]:
    """MobileNet V1 or InceptionResNetV2 with the report's MobileNetV2 head (same recipe, other base)."""
    inputs, x, info = _pooled_backbone(arch, image_size, weights, augment, seed)
    return keras.Model(inputs, report_head(x, dropout, l2, seed=seed), name=f"{arch}_detector"), info


def build_custom_cnn(image_size: int = DEFAULT_IMAGE_SIZE, dropout: float = 0.25, augment: bool | str = True,
                     seed: int = 42, **_) -> tuple[keras.Model, WeightsInfo]:
    """The seed's small CNN: Conv 32 → pool → Conv 16 → pool, Dropout 0.25, Dense 64, one sigmoid.

    The seed ended in a 2-way softmax; one sigmoid unit is the same model (softmax over two
    logits depends only on their difference) and fits the shared train/evaluate code. Trained
    from scratch, so its "backbone" (the two conv blocks, kept as a nested model for Grad-CAM)
    has no pretrained weights and nothing to warn about.
    """
    inputs = keras.Input((image_size, image_size, 3), name="image")
    kind = augment if isinstance(augment, str) else "full"
    x = augmentation_layers(seed, kind)(inputs) if augment else inputs
    x = layers.Rescaling(1.0 / 255, name="preprocess")(x)
    conv_in = keras.Input((image_size, image_size, 3))
    y = layers.Conv2D(32, 3, activation="relu", padding="same", name="conv_1")(conv_in)
    y = layers.MaxPooling2D(2, name="pool_1")(y)
    y = layers.Conv2D(16, 3, activation="relu", padding="same", name="conv_2")(y)
    y = layers.MaxPooling2D(2, name="pool_2")(y)
    x = keras.Model(conv_in, y, name=BACKBONE_NAME)(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dropout(dropout, seed=seed, name="dropout_1")(x)
    x = layers.Dense(64, activation="relu", name="dense_1")(x)
    outputs = layers.Dense(1, activation="sigmoid", dtype="float32", name="prediction")(x)
    return keras.Model(inputs, outputs, name="custom_cnn_detector"), WeightsInfo("custom_cnn", "scratch")


BUILDERS = {
    "mobilenetv2": build_mobilenetv2,
    "resnet50": build_resnet50,
    "mobilenet": lambda **kw: build_transfer("mobilenet", **kw),
    "inceptionresnetv2": lambda **kw: build_transfer("inceptionresnetv2", **kw),
    "custom_cnn": build_custom_cnn,
}


def build_detector(arch: str, **kwargs) -> tuple[keras.Model, WeightsInfo]:
    """Build any detector of :data:`BUILDERS` with keyword arguments of its builder."""
    if arch not in BUILDERS:
        raise ValueError(f"unknown architecture {arch!r}; choose from {sorted(BUILDERS)}")
    return BUILDERS[arch](**kwargs)


def backbone_of(model: keras.Model) -> keras.Model:
    """The nested backbone model."""
    return model.get_layer(BACKBONE_NAME)


def batchnorm_layers(model: keras.Model) -> list[layers.BatchNormalization]:
    """Every BatchNormalization layer, searching nested models."""
    found = []
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            found.append(layer)
        elif isinstance(layer, keras.Model):
            found.extend(batchnorm_layers(layer))
    return found


def prepare_finetune(model: keras.Model, trainable_fraction: float = 0.3,
                     freeze_batchnorm: bool = True) -> dict:
    """Unfreeze the top ``trainable_fraction`` of the backbone's layers, BatchNormalization kept frozen.

    ``freeze_batchnorm=False`` is only for a backbone without pretrained weights (trained from
    scratch): its BatchNormalization statistics are placeholders (mean 0, variance 1) that
    must be learned, and frozen ones make the activations vanish so nothing can train.
    Returns counts of trainable layers and weights, for the run log. Recompile afterwards
    (``helpers.train`` does) with a low learning rate.
    """
    if not 0.0 <= trainable_fraction <= 1.0:
        raise ValueError("trainable_fraction must be in [0, 1]")
    base = backbone_of(model)
    base.trainable = True
    cut = int(round(len(base.layers) * (1.0 - trainable_fraction)))
    for index, layer in enumerate(base.layers):
        layer.trainable = index >= cut
    if freeze_batchnorm:
        for bn in batchnorm_layers(base):
            bn.trainable = False
    trainable = [layer for layer in base.layers if layer.trainable and layer.weights]
    return dict(backbone_layers=len(base.layers), unfrozen_from=cut,
                unfrozen_layers_with_weights=len(trainable),
                trainable_params=int(sum(keras.ops.size(w) for w in model.trainable_weights)),
                batchnorm_frozen=all(not bn.trainable for bn in batchnorm_layers(base)))


def model_parts(model: keras.Model) -> tuple[list[layers.Layer], keras.Model, list[layers.Layer]]:
    """Split a detector into (layers before the backbone, backbone, head layers after it)."""
    names = [layer.name for layer in model.layers]
    cut = names.index(BACKBONE_NAME)
    before = [layer for layer in model.layers[1:cut] if layer.name != "augmentation"]
    return before, model.layers[cut], model.layers[cut + 1:]


def last_conv_layer_names(backbone: keras.Model, count: int = 3) -> list[str]:
    """Names of the last ``count`` 2-D convolution layers of a backbone (for feature maps)."""
    convs = [layer.name for layer in backbone.layers
             if isinstance(layer, (layers.Conv2D, layers.DepthwiseConv2D))]
    return convs[-count:]


def load_detector(path: str | Path) -> keras.Model:
    """Load a detector saved with ``model.save('*.keras')``."""
    return keras.models.load_model(path, compile=False)


MODEL_TITLES = {
    "mobilenetv2": "MobileNetV2",
    "resnet50": "ResNet50",
    "mobilenetv2_head": "MobileNetV2 frozen head",
    "mobilenetv2_finetune": "MobileNetV2 fine-tuned",
    "resnet50_head": "ResNet50 frozen head",
    "resnet50_finetune": "ResNet50 fine-tuned",
    "mobilenet": "MobileNet V1",
    "inceptionresnetv2": "InceptionResNetV2",
    "custom_cnn": "Custom CNN (2 conv)",
}


def inference_model(model: keras.Model) -> keras.Model:
    """The detector without augmentation and with dropout off, for export and serving.

    Exported graphs call the model without a ``training`` flag, which leaves Keras 3's random
    augmentation layers active; this rebuilds the same layers (shared weights) with
    ``training=False`` fixed.
    """
    inputs, x, head = inference_trunk(model)
    for layer in head:
        x = layer(x, training=False)
    return keras.Model(inputs, x, name=f"{model.name}_inference")


def inference_trunk(model: keras.Model):
    """A fresh image input run through the detector's preprocessing and backbone (``training=False``,
    no augmentation); returns ``(inputs, backbone_output, head_layers)`` to build on."""
    before, base, head = model_parts(model)
    inputs = keras.Input(model.input_shape[1:], name="image")
    x = inputs
    for layer in before:
        x = layer(x)
    return inputs, base(x, training=False), head
