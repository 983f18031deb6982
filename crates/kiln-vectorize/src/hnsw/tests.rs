use super::*;
use crate::bench::clustered_vectors;

fn exact(space: Space, data: &[Vec<f32>], query: &[f32], k: usize) -> Vec<u32> {
    let f = |a: &[f32], b: &[f32]| match space {
        Space::Dot => -crate::metric::dot(a, b),
        Space::L2 => crate::metric::squared_l2(a, b),
    };
    let mut all: Vec<Near> = data
        .iter()
        .enumerate()
        .map(|(n, v)| Near {
            distance: f(query, v),
            node: n as u32,
        })
        .collect();
    all.sort_unstable();
    all.into_iter().take(k).map(|near| near.node).collect()
}

fn build(space: Space, data: &[Vec<f32>], threads: usize) -> Graph {
    let mut graph = Graph::new(data[0].len(), space, false, 16, 100);
    let nodes: Vec<u32> = data.iter().map(|v| graph.push(v)).collect();
    graph.link_all(&nodes, threads);
    graph
}

fn recall(graph: &Graph, space: Space, data: &[Vec<f32>], queries: &[Vec<f32>]) -> f64 {
    let mut hits = 0;
    for q in queries {
        let truth = exact(space, data, q, 10);
        let found = graph.search(q, 10, 64, None);
        hits += found
            .iter()
            .filter(|near| truth.contains(&near.node))
            .count();
    }
    hits as f64 / (queries.len() * 10) as f64
}

#[test]
fn recall_single_and_multi_threaded() {
    let data = clustered_vectors(3000, 32, 20, false, 3);
    let (base, queries) = data.split_at(2950);
    for space in [Space::L2, Space::Dot] {
        for threads in [1, 3] {
            let graph = build(space, base, threads);
            let r = recall(&graph, space, base, queries);
            assert!(r >= 0.95, "{space:?} threads {threads}: recall {r}");
        }
    }
}

#[test]
fn deleted_nodes_are_never_returned_and_filters_apply() {
    let data = clustered_vectors(2000, 16, 10, false, 9);
    let mut graph = build(Space::L2, &data, 2);
    for node in (0..2000).step_by(2) {
        graph.mark_deleted(node);
    }
    for q in data.iter().take(20) {
        let found = graph.search(q, 10, 50, None);
        assert_eq!(found.len(), 10);
        assert!(found.iter().all(|near| near.node % 2 == 1));
        let filter = |node: u32| node.is_multiple_of(3);
        let found = graph.search(q, 10, 50, Some(&filter));
        assert_eq!(found.len(), 10);
        assert!(found.iter().all(|near| near.node % 6 == 3));
    }
}

#[test]
fn structure_round_trips() {
    let data = clustered_vectors(1500, 24, 10, true, 4);
    let mut graph = Graph::new(24, Space::Dot, true, 16, 64);
    let nodes: Vec<u32> = data.iter().map(|v| graph.push(v)).collect();
    graph.link_all(&nodes, 2);
    graph.mark_deleted(5);
    let mut bytes = Vec::new();
    graph.write_structure(&mut bytes, |node| node == 5).unwrap();
    let loaded = Graph::read_structure(&mut &bytes[..], 24, Space::Dot, true, |node| {
        (node != 5).then(|| data[node as usize].clone())
    })
    .unwrap();
    assert_eq!(loaded.len(), graph.len());
    assert!(loaded.is_deleted(5));
    for q in data.iter().take(30) {
        assert_eq!(
            graph.search(q, 10, 40, None),
            loaded.search(q, 10, 40, None)
        );
    }
    assert!(Graph::read_structure(&mut &bytes[..100], 24, Space::Dot, true, |_| None).is_err());
    assert!(Graph::read_structure(&mut &bytes[..], 25, Space::Dot, true, |_| None).is_err());
}
