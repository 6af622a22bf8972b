"""`python mnist.py predict IMAGE...`: the digit in each picture, read as images.py reads it, by weights
that mnist.py trained."""

import json

import torch

import images
import mnist


def main(argv):
    p = mnist.make_parser("predict", "Predict the digit in each image: a drawing (transparent or not), a scan or a "
                          "photo of one digit, any size, dark on light or light on dark.")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="a picture of one digit; as many as you like")
    p.add_argument("--weights", default="mnist_cnn.pt", help="(default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print a JSON list of {path, digit, probability}")
    p.add_argument("--show", metavar="PNG", help="save the 28×28 inputs the model saw, side by side")
    args = p.parse_args(argv)
    mnist.check_args(p, args, args.show)
    device = mnist.pick_device(args.device)
    model = mnist.load_weights(args.weights, device)
    results, inputs = [], []
    for path in args.images:
        try:
            inputs.append(images.prepare_image(path))
            results.append({"path": path})
        except images.ImageError as e:
            results.append({"path": path, "error": str(e)})
    if inputs:
        batch = torch.stack(inputs)
        probs = mnist.logits_over_views(model, batch.to(device)).softmax(1).cpu()
        for r, prob in zip((r for r in results if "error" not in r), probs):
            r["digit"], r["probability"] = prob.argmax().item(), prob.max().item()
        if args.show:
            mnist.save_grid(args.show, batch)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for r in results:
            print(f"{r['path']}: error: {r['error']}" if "error" in r else
                  f"{r['path']}: {r['digit']} ({100 * r['probability']:.1f}%)")
    return 1 if any("error" in r for r in results) else 0
