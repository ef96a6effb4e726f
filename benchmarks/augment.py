"""cnnkit's augmentation pipelines against albumentations, in one run, on one core each.

    pip install -e .[bench]        # albumentations
    python benchmarks/augment.py [--images 400] [--repeats 3] [--size 224] [--boxes 10]

Two pipelines, the same operations and strengths on both sides, from a decoded uint8 HxWx3 photo
(scikit-learn's sample photos, 427x640) to a normalised float CHW tensor:
- classification: random resized crop (25-100% of the area) to --size, horizontal flip, affine
  (rotation ±15°, shift 10%, zoom ±10%), colour jitter (0.3 brightness/contrast/saturation, 0.02 hue),
  Gaussian blur (p 0.1), occlusion in pieces (cnnkit's --erasing; albumentations' CoarseDropout with
  up to 6 noise-filled holes; p 0.25), normalise;
- detection: the same geometry on the photo with --boxes boxes (xyxy pixels), boxes clipped and the
  vanished ones dropped, colour jitter, normalise.
cnnkit runs ``classify_transforms`` / ``dense_transforms`` (torchvision.transforms.v2, uint8 tensors
until the float ops); albumentations runs A.Compose with ToTensorV2. Images/s is the median of
--repeats passes; the sides alternate pass by pass so machine noise hits both alike. The issue's
target: cnnkit not slower, ratio cnnkit / albumentations >= 1.0.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch


def photos() -> list[np.ndarray]:
    from sklearn.datasets import load_sample_images

    return list(load_sample_images().images)


def random_boxes(rng: np.random.Generator, height: int, width: int, n: int) -> np.ndarray:
    x0 = rng.uniform(0, width * 0.8, n)
    y0 = rng.uniform(0, height * 0.8, n)
    w = rng.uniform(20, width * 0.3, n)
    h = rng.uniform(20, height * 0.3, n)
    return np.stack([x0, y0, np.minimum(x0 + w, width), np.minimum(y0 + h, height)], 1).astype(np.float32)


def cnnkit_pipelines(size: int):
    from cnnkit.augment.presets import AugmentSpec, classify_transforms, dense_transforms

    spec = AugmentSpec(fliplr=0.5, degrees=15, translate=0.1, scale=0.1, crop_scale=0.25, brightness=0.3, contrast=0.3,
                       saturation=0.3, hue=0.02, blur=0.1, erasing=0.25)
    dense_spec = AugmentSpec(fliplr=0.5, degrees=15, translate=0.1, scale=0.1, crop_scale=0.5, brightness=0.3, contrast=0.3,
                             saturation=0.3, hue=0.02)
    return classify_transforms(size, True, spec), dense_transforms(size, True, dense_spec)


def albumentations_pipelines(size: int):
    import albumentations as A
    from albumentations.pytorch import ToTensorV2

    classify = A.Compose([
        A.RandomResizedCrop(size=(size, size), scale=(0.25, 1.0)),
        A.HorizontalFlip(p=0.5),
        A.Affine(rotate=(-15, 15), translate_percent=(-0.1, 0.1), scale=(0.9, 1.1), p=1.0),
        A.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.02, p=1.0),
        A.GaussianBlur(sigma_limit=(0.1, 2.0), p=0.1),
        A.Normalize(),
        # cnnkit's --erasing hides 5-60 % of the image in pieces of 3-15 % (noise, a colour or a copy):
        # up to 6 holes of 17-39 % of each side (3-15 % of the area) filled with noise is the nearest here
        A.CoarseDropout(num_holes_range=(1, 6), hole_height_range=(0.17, 0.39), hole_width_range=(0.17, 0.39), fill="random", p=0.25),
        ToTensorV2(),
    ])
    detect = A.Compose([
        A.RandomResizedCrop(size=(size, size), scale=(0.5, 1.0)),
        A.HorizontalFlip(p=0.5),
        A.Affine(rotate=(-15, 15), translate_percent=(-0.1, 0.1), scale=(0.9, 1.1), p=1.0),
        A.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.02, p=1.0),
        A.Normalize(),
        ToTensorV2(),
    ], bbox_params=A.BboxParams(format="pascal_voc", label_fields=["labels"], min_area=1.0))
    return classify, detect


def run_cnnkit(transform, images, targets) -> None:
    from torchvision import tv_tensors

    for image, target in zip(images, targets):
        tensor = torch.from_numpy(image).permute(2, 0, 1)  # HWC uint8 -> CHW view, no copy
        if target is None:
            transform(tensor)
        else:
            boxes, labels = target
            transform(tv_tensors.Image(tensor), {"boxes": tv_tensors.BoundingBoxes(torch.from_numpy(boxes), format="XYXY",
                                                                                   canvas_size=image.shape[:2]),
                                                 "labels": torch.from_numpy(labels)})


def run_albumentations(transform, images, targets) -> None:
    for image, target in zip(images, targets):
        if target is None:
            transform(image=image)
        else:
            boxes, labels = target
            transform(image=image, bboxes=boxes, labels=labels)


def measure(fn, transform, images, targets) -> float:
    start = time.perf_counter()
    fn(transform, images, targets)
    return len(images) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=400, help="images per pass")
    parser.add_argument("--repeats", type=int, default=3, help="passes per side (median)")
    parser.add_argument("--size", type=int, default=224, help="output side")
    parser.add_argument("--boxes", type=int, default=10, help="boxes per image in the detection pipeline")
    args = parser.parse_args()

    import albumentations
    import cv2
    import torchvision

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    rng = np.random.default_rng(0)
    sources = photos()
    images = [np.array(sources[i % len(sources)]) for i in range(args.images)]  # writable copies, as decoded files are
    boxed = [(random_boxes(rng, *image.shape[:2], args.boxes), np.arange(args.boxes, dtype=np.int64)) for image in images]
    ours, theirs = cnnkit_pipelines(args.size), albumentations_pipelines(args.size)
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, albumentations {albumentations.__version__}, "
          f"opencv {cv2.__version__}; {args.images} images {images[0].shape[1]}x{images[0].shape[0]} -> {args.size}, one thread each")
    print(f"{'pipeline':<16}{'cnnkit img/s':>14}{'albumentations img/s':>22}{'ratio':>8}")
    for row, (name, targets) in enumerate((("classification", [None] * len(images)), (f"detection ({args.boxes} boxes)", boxed))):
        measure(run_cnnkit, ours[row], images[:20], targets[:20])  # warm-up
        measure(run_albumentations, theirs[row], images[:20], targets[:20])
        ours_speed, theirs_speed = [], []
        for repeat in range(args.repeats):
            order = [(run_cnnkit, ours[row], ours_speed), (run_albumentations, theirs[row], theirs_speed)]
            for fn, transform, speeds in order if repeat % 2 == 0 else order[::-1]:
                speeds.append(measure(fn, transform, images, targets))
        ours_median, theirs_median = statistics.median(ours_speed), statistics.median(theirs_speed)
        print(f"{name:<16}{ours_median:>14.0f}{theirs_median:>22.0f}{ours_median / theirs_median:>8.2f}")


if __name__ == "__main__":
    main()
