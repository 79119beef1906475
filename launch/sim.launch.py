"""ros2 launch robot_rl sim.launch.py [learner_host:=IP] [train_config:=FILE] [keys_dir:=DIR] [actor_id:=ID]
    [twin_stats_file:=FILE]

The whole ROS 2 path without hardware: robot_rl_twin_node (the MuJoCo Panda twin publishing /joint_states, the TCP
pose, rgb8 camera images and the success flag, following the Cartesian target and gripper commands) and the same
robot_rl_actor_node and robot_rl_safety_node as on the real robot, with real.yaml overlaid by sim.yaml. A launch
argument left out keeps the files' value. ``twin_stats_file`` names where the twin node writes its statistics as
it stops (JSON: commands, episode resets, arm recoveries, physics lag), for benchmarks and tests.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from robot_rl.hardware.ros2.config import LAUNCH_FORWARDED, launch_overrides


def _nodes(context):
    share = FindPackageShare("robot_rl").perform(context)
    real_params, sim_params = f"{share}/config/real.yaml", f"{share}/config/sim.yaml"
    given = launch_overrides({name: LaunchConfiguration(name).perform(context) for name in LAUNCH_FORWARDED})
    twin_stats = LaunchConfiguration("twin_stats_file").perform(context)
    twin = Node(package="robot_rl", executable="robot_rl_twin_node", name="robot_rl_twin", output="screen",
                parameters=[sim_params, {"stats_file": twin_stats}] if twin_stats else [sim_params])
    safety = Node(package="robot_rl", executable="robot_rl_safety_node", name="robot_rl_safety", output="screen",
                  parameters=[{"params_files": [real_params, sim_params]}])
    # On SIGINT the actor finishes its step, flushes the transport (up to 5 s) and leaves the robot holding:
    # more than launch's default 5 s before it escalates to SIGTERM.
    actor = Node(package="robot_rl", executable="robot_rl_actor_node", name="robot_rl_actor", output="screen",
                 emulate_tty=True, sigterm_timeout="15",
                 parameters=[real_params, sim_params, given, {"command.via_safety_node": True}])
    return [twin, safety, actor]


def generate_launch_description():
    arguments = [DeclareLaunchArgument(name, default_value="", description=text)
                 for name, text in LAUNCH_FORWARDED.items()]
    arguments.append(DeclareLaunchArgument("twin_stats_file", default_value="",
                                           description="the twin node writes its statistics here as it stops"))
    return LaunchDescription([*arguments, OpaqueFunction(function=_nodes)])
