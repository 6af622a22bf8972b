"""`python mnist.py evaluate`: saved weights' test accuracy, each digit's, the confusion matrix, and the test
digits they get wrong, by the evaluation mnist.py trains with."""

import torch

import datafiles
import mnist


def confusion_matrix(labels, predicted):
    """10×10 counts, rows the true digit, columns the predicted one."""
    return torch.bincount(labels * 10 + predicted, minlength=100).view(10, 10)


def main(argv):
    p = mnist.make_parser("evaluate", "Evaluate saved weights on the 10,000 test images.", data=True)
    p.add_argument("--weights", default="mnist_cnn.pt", help="(default: %(default)s)")
    p.add_argument("--metrics-json", metavar="PATH", help="write test_accuracy, per_class and confusion here")
    p.add_argument("--errors", metavar="PNG", help="save a grid of the misclassified test digits here")
    args = p.parse_args(argv)
    mnist.check_args(p, args, args.metrics_json, args.errors)
    device = mnist.pick_device(args.device)
    model = mnist.load_weights(args.weights, device)
    if fetched := datafiles.find_mnist(args.data_dir):  # one line, only when it was not there
        print(fetched)
    images, labels = (t.to(device) for t in mnist.load_mnist(args.data_dir, ["test"])["test"])
    predicted = mnist.logits_over_views(model, images).argmax(1)
    confusion = confusion_matrix(labels, predicted).cpu()
    accuracy = 100 * confusion.trace().item() / len(labels)
    per_class = (100 * confusion.diag() / confusion.sum(1)).tolist()
    wrong = (predicted != labels).nonzero()[:, 0]

    print(f"test accuracy {accuracy:.2f}% ({len(wrong)} of {len(labels):,} wrong)")
    print("confusion matrix, rows true, columns predicted:")
    print("     " + "".join(f"{d:>6}" for d in range(10)) + "   accuracy")
    for d in range(10):
        print(f"  {d}: " + "".join(f"{n:>6}" for n in confusion[d].tolist()) + f"   {per_class[d]:6.2f}%")
    if args.errors:
        mnist.save_grid(args.errors, images[wrong], nrow=20)
        pairs = [f"{t}→{q}" for t, q in zip(labels[wrong].tolist(), predicted[wrong].tolist())]
        print(f"misclassified digits in {args.errors}, row by row (true→predicted):")
        for row in range(0, len(pairs), 20):
            print("  " + " ".join(pairs[row:row + 20]))
    if args.metrics_json:
        mnist.write_json(args.metrics_json, {"test_accuracy": accuracy, "per_class": per_class,
                                       "confusion": confusion.tolist()})
    return 0
