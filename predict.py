"""`python mnist.py predict IMAGE...`: the number in each picture (one digit, or a row of them), found and
read as images.py reads it, by weights that mnist.py trained."""

import json

import torch

import images
import mnist


def read_numbers(model, device, paths):
    """[{"path", "number", "digits": [{"digit", "probability", "box"}], and for one digit "digit" and
    "probability"}, or {"path", "error"}] for each picture, and the 28×28 inputs the model saw."""
    results, inputs = [], []
    for path in paths:
        try:
            found = images.read_digits(path)
            results.append({"path": path, "boxes": [box for _, box in found]})
            inputs += [x for x, _ in found]
        except images.ImageError as e:
            results.append({"path": path, "error": str(e)})
    if not inputs:
        return results, None
    batch = torch.stack(inputs)
    probs = iter(mnist.logits_over_views(model, batch.to(device)).softmax(1).cpu())
    for r in results:
        if "error" not in r:
            r["digits"] = [{"digit": p.argmax().item(), "probability": p.max().item(), "box": box}
                           for box, p in zip(r.pop("boxes"), probs)]  # (zip takes one more of its first)
            r["number"] = "".join(str(d["digit"]) for d in r["digits"])
            if len(r["digits"]) == 1:
                r.update(digit=r["digits"][0]["digit"], probability=r["digits"][0]["probability"])
    return results, batch


def line(r):
    """predict's line for one picture: the number, and how sure the model is of each digit."""
    if "error" in r:
        return f"{r['path']}: error: {r['error']}"
    return f"{r['path']}: {r['number']} (" + ", ".join(
        (f"{d['digit']} " if len(r["digits"]) > 1 else "") + f"{100 * d['probability']:.1f}%" for d in r["digits"]) + ")"


def main(argv):
    p = mnist.make_parser("predict", "Predict the number in each image: a drawing (transparent or not), a scan or "
                          "a photo of one digit or a row of them written apart, any size, dark on light or light "
                          "on dark.")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="a picture of a digit or a number; as many as you like")
    p.add_argument("--weights", default="mnist_cnn.pt", help="(default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print a JSON list of {path, number, digits: [{digit, "
                   "probability, box}]}, with digit and probability for a one-digit picture")
    p.add_argument("--show", metavar="PNG", help="save the 28×28 inputs the model saw, side by side")
    args = p.parse_args(argv)
    mnist.check_args(p, args, args.show)
    device = mnist.pick_device(args.device)
    model = mnist.load_weights(args.weights, device)
    results, batch = read_numbers(model, device, args.images)
    if args.show and batch is not None:
        mnist.save_grid(args.show, batch)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for r in results:
            print(line(r))
    return 1 if any("error" in r for r in results) else 0
