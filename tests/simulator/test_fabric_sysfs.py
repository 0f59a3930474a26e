from gpuslo.collectors import Agent, InfinibandCollector
from gpuslo.simulator import IbPort, write_infiniband_tree


def test_written_tree_is_read_back_by_the_fabric_collector_in_bytes(tmp_path):
    port = IbPort("mlx5_3", link_layer="Ethernet", rate_gbps=200)
    port.counters["port_rcv_data"] = 1000
    port.hw_counters["np_cnp_sent"] = 9
    write_infiniband_tree(tmp_path, [port, IbPort("mlx5_4", state="DOWN")])
    agent = Agent([InfinibandCollector(tmp_path)])
    agent.sample_all()
    text = agent.render()
    assert 'node_infiniband_port_data_received_bytes_total{device="mlx5_3",port="1"} 4000' in text
    assert (
        'gpuslo_infiniband_hw_events_total{device="mlx5_3",port="1",event="np_cnp_sent"} 9' in text
    )
    assert 'node_infiniband_state_id{device="mlx5_4",port="1"} 1' in text
    assert 'link_layer="Ethernet"' in text
