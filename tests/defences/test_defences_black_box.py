"""Opening a user's classifier: TorchScript, ONNX, refusals with clear errors."""

from __future__ import annotations

import functools
import pickle

import pytest
import torch
from defences_helpers import export_onnx, export_torchscript, tiny_classifier

from vicious.defences import BlackBox
from vicious.defences import open_classifier as open_any_classifier

# The test models are our own: they may run also where no sandbox is available (then with
# the limits only); where bubblewrap works, they run sandboxed all the same.
open_classifier = functools.partial(open_any_classifier, unconfined=True)


def test_torchscript_outputs_equal_the_module(tmp_path, fashion_info):
    model = tiny_classifier()
    export_torchscript(model, tmp_path / "model.pt")
    box = open_classifier(tmp_path / "model.pt", fashion_info)
    assert box.input_shape == (1, 32, 32) and box.num_outputs == 10 and box.form == "logits"
    x = torch.rand(7, 1, 32, 32)
    with torch.no_grad():
        expected = model(x)
    torch.testing.assert_close(box(x), expected, atol=1e-5, rtol=1e-5)


def test_onnx_outputs_equal_the_module_also_with_a_static_batch(tmp_path, fashion_info):
    model = tiny_classifier(seed=1)
    x = torch.rand(10, 1, 32, 32)
    with torch.no_grad():
        expected = model(x)
    export_onnx(model, tmp_path / "dynamic.onnx")
    box = open_classifier(tmp_path / "dynamic.onnx", fashion_info, batch_size=3)
    torch.testing.assert_close(box(x), expected, atol=1e-4, rtol=1e-4)
    export_onnx(model, tmp_path / "static.onnx", dynamic=False)  # batch fixed at 4: 10 images need padding
    static = open_classifier(tmp_path / "static.onnx", fashion_info)
    assert static.fixed_batch and static.batch_size == 4
    torch.testing.assert_close(static(x), expected, atol=1e-4, rtol=1e-4)


def test_probability_outputs_are_detected(tmp_path, fashion_info):
    model = torch.nn.Sequential(tiny_classifier(), torch.nn.Softmax(dim=1)).eval()
    export_torchscript(model, tmp_path / "p.pt", channels=1)
    assert open_classifier(tmp_path / "p.pt", fashion_info).form == "probabilities"


def test_a_pickle_is_refused_without_loading_it(tmp_path, fashion_info):
    torch.save(tiny_classifier().state_dict(), tmp_path / "weights.pt")  # zip with data.pkl
    with pytest.raises(ValueError, match="not a TorchScript model"):
        open_classifier(tmp_path / "weights.pt", fashion_info)

    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('unpickled!')",))

    (tmp_path / "plain.pkl").write_bytes(pickle.dumps(Boom()))
    with pytest.raises(ValueError, match="pickle, which is never loaded"):
        open_classifier(tmp_path / "plain.pkl", fashion_info)


def test_files_that_are_not_models_are_refused(tmp_path, fashion_info):
    (tmp_path / "notes.txt").write_text("hello, I am not a classifier\n")
    with pytest.raises(ValueError, match="not a model"):
        open_classifier(tmp_path / "notes.txt", fashion_info)
    (tmp_path / "empty.onnx").write_bytes(b"")
    with pytest.raises(ValueError, match="not a model"):
        open_classifier(tmp_path / "empty.onnx", fashion_info)
    with pytest.raises(FileNotFoundError, match="no model at"):
        open_classifier(tmp_path / "missing.pt", fashion_info)


def test_output_size_must_match_the_dataset(tmp_path, fashion_info):
    export_torchscript(tiny_classifier(outputs=7), tmp_path / "k7.pt")
    with pytest.raises(ValueError, match=r"gives 7 outputs per image but fashion-mnist has K = 10 classes"):
        open_classifier(tmp_path / "k7.pt", fashion_info)


def test_input_shape_must_match_the_dataset(tmp_path, fashion_info):
    rgb = tiny_classifier(channels=3)
    export_onnx(rgb, tmp_path / "rgb.onnx")
    with pytest.raises(ValueError, match=r"expects input \(N, 3, 32, 32\) but fashion-mnist images are \(N, 1, 32, 32\)"):
        open_classifier(tmp_path / "rgb.onnx", fashion_info)
    export_torchscript(rgb, tmp_path / "rgb.pt")  # TorchScript declares no shape: the probe fails
    with pytest.raises(ValueError, match=r"failed on fashion-mnist images of shape \(2, 1, 32, 32\)"):
        open_classifier(tmp_path / "rgb.pt", fashion_info)
    export_onnx(tiny_classifier(), tmp_path / "s16.onnx", size=16)  # dynamo exports a fixed side
    with pytest.raises(ValueError, match="height differ"):
        open_classifier(tmp_path / "s16.onnx", fashion_info)


def test_a_black_box_refuses_images_of_the_wrong_shape(fashion_info):
    box = BlackBox.from_module(tiny_classifier(), fashion_info)
    with pytest.raises(ValueError, match=r"takes images \(N, 1, 32, 32\), got \(2, 3, 32, 32\)"):
        box(torch.rand(2, 3, 32, 32))


def test_sandboxed_outputs_equal_those_computed_here(tmp_path, fashion_info):
    x = torch.rand(600, 1, 32, 32)  # two batches, the second short
    for name, export in (("m.pt", export_torchscript), ("m.onnx", export_onnx)):
        export(tiny_classifier(seed=2), tmp_path / name)
        with open_classifier(tmp_path / name, fashion_info) as sandboxed:
            here = open_classifier(tmp_path / name, fashion_info, trusted=True)
            assert torch.equal(sandboxed(x), here(x)), name


def test_integer_outputs_are_refused_not_scored(fashion_info):
    box = BlackBox(lambda x: torch.zeros(len(x), 10, dtype=torch.int64), (1, 32, 32), 10, "multiclass", "logits", "toy")
    with pytest.raises(ValueError, match="toy returns int64 outputs"):
        box(torch.rand(2, 1, 32, 32))


def test_an_onnx_model_without_its_data_file_says_how_to_export_one_file(tmp_path, fashion_info):
    import warnings

    model = tiny_classifier()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.rand(4, 1, 32, 32),), str(tmp_path / "model.onnx"), dynamo=True,
                          external_data=True, verbose=False)
    (tmp_path / "model.onnx.data").rename(tmp_path / "elsewhere.data")  # the side file left behind
    with pytest.raises(ValueError, match=r"'model.onnx.data', which is not a file next to it.*external_data=False"):
        open_classifier(tmp_path / "model.onnx", fashion_info)
    # Beside the model again, it is read (inside the sandbox, which is shown the file).
    (tmp_path / "elsewhere.data").rename(tmp_path / "model.onnx.data")
    with open_classifier(tmp_path / "model.onnx", fashion_info) as box, torch.no_grad():
        x = torch.rand(3, 1, 32, 32)
        torch.testing.assert_close(box(x), model(x), atol=1e-4, rtol=1e-4)
    # The data file of another, smaller export beside it: named, before anything is loaded.
    data = (tmp_path / "model.onnx.data").read_bytes()
    (tmp_path / "model.onnx.data").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=rf"reads [\d,]+ bytes of tensors from 'model.onnx.data', which holds "
                                         rf"{len(data) // 2:,}: a data file of another export"):
        open_classifier(tmp_path / "model.onnx", fashion_info)


def test_an_external_tensor_with_a_crafted_offset_is_refused_unread(tmp_path, fashion_info):
    import warnings

    import onnx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(tiny_classifier(), (torch.rand(4, 1, 32, 32),), str(tmp_path / "model.onnx"), dynamo=True,
                          external_data=True, verbose=False)
    model = onnx.load(str(tmp_path / "model.onnx"), load_external_data=False)
    entries = [e for t in model.graph.initializer for e in t.external_data if e.key == "offset"]
    assert entries  # the exporter records where each tensor starts
    entries[0].value = "-5"
    onnx.save(model, str(tmp_path / "model.onnx"))
    with pytest.raises(ValueError, match=r"an external tensor whose offset is b'-5', not a byte count"):
        open_classifier(tmp_path / "model.onnx", fashion_info)
