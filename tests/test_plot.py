import json

import numpy as np

from dreamerv2_tf import config as configlib
from dreamerv2_tf import plot


def fake_run(path, task, steps, returns):
    path.mkdir(parents=True)
    configlib.defaults().update(task=task).save(path / 'config.yaml')
    with open(path / 'metrics.jsonl', 'w') as f:
        for step, value in zip(steps, returns):
            f.write(json.dumps({'step': step, 'eval_return': value}) + '\n')
            f.write(json.dumps({'step': step, 'model_loss': 1.0}) + '\n')  # other metrics


def test_binning_by_hand():
    xs, ys = plot.binned(np.array([1, 10, 11, 25, 30]), np.array([1.0, 3.0, 5.0, 7.0, 9.0]), 10)
    # Bins (0, 10], (10, 20], (20, 30], at their right borders.
    np.testing.assert_array_equal(xs, [10, 20, 30])
    np.testing.assert_array_equal(ys, [2.0, 5.0, 8.0])


def test_plot_writes_curves_and_compares_with_the_paper(tmp_path, capsys):
    fake_run(tmp_path / 'a', 'atari_pong', [4e5, 9e5, 1.6e6], [-21.0, -19.0, -15.0])
    fake_run(tmp_path / 'b', 'dmc_walker_walk', [5e3, 8e3], [100.0, 300.0])
    code = plot.main([str(tmp_path / 'a'), str(tmp_path / 'b'), '--out', str(tmp_path / 'out')])
    assert code == 0
    assert (tmp_path / 'out' / 'curves.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    runs = {r['task']: r for r in json.loads((tmp_path / 'out' / 'runs.json').read_text())}
    assert runs['atari_pong']['xs'] == [1e6, 2e6] and runs['atari_pong']['ys'] == [-20.0, -15.0]
    assert runs['dmc_walker_walk']['xs'] == [1e4] and runs['dmc_walker_walk']['ys'] == [200.0]
    # The paper's Pong at 2e6 frames, straight from the score file, beside our latest value.
    records = json.loads((plot.scores_dir() / 'atari-dreamerv2.json').read_text())
    values = [r['ys'][r['xs'].index(2e6)] for r in records
              if r['task'] == 'atari_pong' and r['method'] == 'dreamerv2' and 2e6 in r['xs']]
    assert len(values) == 8
    pong = [line for line in capsys.readouterr().out.splitlines() if ' -15.00 ' in line]
    assert len(pong) == 1 and pong[0].endswith(f'{np.mean(values):.1f} +- {np.std(values):.1f}')


def test_plot_refuses_a_folder_without_metrics(tmp_path):
    assert plot.main([str(tmp_path), '--out', str(tmp_path / 'out')]) == 2
