"""ros2 launch robot_rl sim.launch.py [learner_host:=IP] [train_config:=FILE]

The whole ROS 2 path without hardware: robot_rl_twin_node (the MuJoCo Panda twin publishing /joint_states, the TCP
pose, rgb8 camera images and the success flag, following the Cartesian target and gripper commands) and the same
robot_rl_actor_node as on the real robot, with real.yaml overlaid by sim.yaml.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare


def generate_launch_description():
    share = FindPackageShare("robot_rl")
    real_params = PathJoinSubstitution([share, "config", "real.yaml"])
    sim_params = PathJoinSubstitution([share, "config", "sim.yaml"])
    arguments = [DeclareLaunchArgument(name, default_value="", description=text) for name, text in (
        ("train_config", "the learner's run_dir/config_learner.yaml"),
        ("learner_host", "learner address (transport.host)"))]
    twin = Node(package="robot_rl", executable="robot_rl_twin_node", name="robot_rl_twin", output="screen",
                parameters=[sim_params])
    actor = Node(package="robot_rl", executable="robot_rl_actor_node", name="robot_rl_actor", output="screen",
                 emulate_tty=True,
                 parameters=[real_params, sim_params, {"train_config": LaunchConfiguration("train_config"),
                                                       "learner_host": LaunchConfiguration("learner_host")}])
    return LaunchDescription([*arguments, twin, actor])
