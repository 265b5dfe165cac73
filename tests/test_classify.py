"""The bundled model classifies real photos correctly (the ARCHITECTURE sanity figures)."""


def test_cat_is_a_cat(lite0, cat):
    import deepprobe as dp

    top = dp.classify(lite0, cat, top=3)[0].labels
    assert set(top) & {"tiger cat", "Egyptian cat", "tabby"}
    assert top[0] in {"tiger cat", "Egyptian cat", "tabby"}


def test_espresso_is_espresso(lite0, coffee):
    pred = lite0.predict(coffee)[0]
    assert lite0.class_name(int(pred.argmax())) == "espresso"
    assert float(pred.max()) > 0.8
