"""Catalog: per-item work fanned out by a group and merged by a chord.

No route matches these names, so they go to the default queue.
"""

from celery import chord, group, shared_task


@shared_task
def resize_image(image_id: int, width: int) -> dict:
    """Compute the resized geometry of one image (4:3 originals)."""
    if width <= 0:
        raise ValueError(f"image {image_id}: width must be positive, got {width}")
    return {"image_id": image_id, "width": width, "height": width * 3 // 4}


@shared_task
def publish_gallery(images: list[dict], gallery_id: int) -> dict:
    """Chord callback: called once, with every resize_image result."""
    return {
        "gallery_id": gallery_id,
        "images": sorted(image["image_id"] for image in images),
        "pixels": sum(image["width"] * image["height"] for image in images),
    }


@shared_task
def import_feed(url: str) -> int:
    """Import a product feed; fails (no retry) on a URL it cannot use."""
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"feed URL must be http(s), got {url!r}")
    return len(url)


def resize_all(image_ids: list[int], width: int) -> group:
    return group(resize_image.s(image_id, width) for image_id in image_ids)


def build_gallery(gallery_id: int, image_ids: list[int], width: int = 640) -> chord:
    return chord(resize_all(image_ids, width), publish_gallery.s(gallery_id=gallery_id))
